"""Keeping console tickets out of server logs.

Console WebSockets carry their ticket in the query string, and any URL may be given one.
uvicorn logs whole targets ("WebSocket /ws/console/1/?token=..."), so its loggers get a filter
that blanks ticket values in the message and in each argument, keeping the record's shape (its
access formatter reads the arguments by position); Daphne's access log is redacted by
`portal.daphne`, websockify's by `console.websockify_proxy`.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"([?&]token=)[^&\s\"']*")


def redact_tokens(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


def _redacted(value: object) -> object:
    return redact_tokens(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redacted(value) for key, value in record.args.items()}
        return True


def redact_tokens_in(*logger_names: str) -> None:
    for name in logger_names:
        logging.getLogger(name).addFilter(RedactTokens())
