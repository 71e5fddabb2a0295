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
