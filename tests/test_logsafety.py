import logging

from portal.logsafety import RedactTokens, redact_tokens


def test_tickets_are_redacted_from_log_lines():
    line = '127.0.0.1 - "WebSocket /ws/console/1/?token=abc123&x=1" [accepted]'
    assert redact_tokens(line) == '127.0.0.1 - "WebSocket /ws/console/1/?token=[redacted]&x=1" [accepted]'


def test_the_filter_rewrites_formatted_records():
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, "", 0, '%s - "WebSocket %s"', ("h", "/?token=s3cret"), None
    )
    assert RedactTokens().filter(record)
    assert record.getMessage() == 'h - "WebSocket /?token=[redacted]"'


def test_uvicorns_access_records_keep_their_arguments():
    # uvicorn's AccessFormatter reads the client, method, path, version and status by position.
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/x/?a=1&token=s3cret", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    line = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s", use_colors=False).format(
        record
    )
    assert line == "127.0.0.1:5000 GET /x/?a=1&token=[redacted] HTTP/1.1 200 OK"
