"""Keeping console tickets out of server logs.

Console WebSockets carry their ticket in the query string. Daphne logs paths without it;
uvicorn logs the whole target ("WebSocket /ws/console/1/?token=..."), so its loggers get a
filter that blanks ticket values before anything is written.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"([?&]token=)[^&\s\"']*")


def redact_tokens(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_tokens_in(*logger_names: str) -> None:
    for name in logger_names:
        logging.getLogger(name).addFilter(RedactTokens())
