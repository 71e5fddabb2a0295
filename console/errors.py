"""The portal's one vocabulary of failures: the errors users can cause (HTTP status, stable
code, headers), and the ends of console connections (WebSocket close codes, with what the
record keeps and what the page tells the user).

A leaf: it imports nothing of the project, so every layer can raise from it. Pages, page JSON
and the API each render a `PortalError` with one handler; the console pages' JavaScript gets
the table of ends rendered from `End` (`end_table`), and a test holds the README's table to it.
"""

from __future__ import annotations

import enum

from django.utils.translation import gettext, gettext_noop


class PortalError(Exception):
    """An error a user can cause and act on; `message` says what to do in words."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After, ...)."""
        return {}

    def public_message(self, *, staff: bool) -> str:
        """What to tell the user (staff may be told more)."""
        return self.message


class NotFound(PortalError):
    """The thing does not exist, or the user may not know it does."""

    status = 404
    code = "not_found"


class SecondFactorRequired(PortalError):
    """A fresh second factor is needed first (two-factor authentication's step-up)."""

    status = 403
    code = "second_factor_required"

    def __init__(self, message: str, *, verify_url: str) -> None:
        super().__init__(message)
        self.verify_url = verify_url


class StaffOnly(PortalError):
    status = 403
    code = "staff_only"


class Invalid(PortalError):
    """Input refused; `field` names the field at fault."""

    status = 422
    code = "invalid"


class ConsoleUnavailable(PortalError):
    """The VM has no console to open now (not running, or no graphics device); says why."""

    status = 409
    code = "console_unavailable"


class VmStateConflict(PortalError):
    """The action does not fit the VM's state (start a running VM, ...)."""

    status = 409
    code = "vm_state"


class RateLimited(PortalError):
    """Too many requests in a short time; `retry_after` says when to try again (s)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(PortalError):
    """Something the request needs does not answer now; try again after `retry_after` s."""

    status = 503
    code = "unavailable"
    retry_after = 10

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"
    retry_after = 5


class VmMoving(Unavailable):
    """The VM is being live-migrated: its console opens on the new host in a moment."""

    code = "vm_moving"
    retry_after = 2


DATABASE_DOWN = DatabaseUnavailable(
    "The portal's database does not answer. Consoles already open keep working; try again in a few seconds."
)


class End(enum.IntEnum):
    """Why a console connection was refused or ended: the WebSocket close code it ends with.

    Every path (the portal's WebSocket, websockify, the SPICE proxy, the serial console) ends
    with these; `reason` is what session records and logs keep, `advice` what a page says.
    """

    CONNECTION_LOST = 1006  # reported by browsers, never sent
    WORKER_STOPPING = 1012
    PROXY_BUSY = 1013
    FOREIGN_ORIGIN = 4001
    NOT_LOGGED_IN = 4002
    UNKNOWN_TICKET = 4003
    EXPIRED = 4004
    EXHAUSTED = 4005
    OTHER_USER = 4006
    OTHER_VM = 4007
    FORBIDDEN = 4008
    LOGGED_OUT = 4009
    UNREACHABLE = 4010
    CONSOLE_ENDED = 4011
    WRONG_PATH = 4012
    VM_RESTARTED = 4013
    TOO_MANY_CONSOLES = 4014
    HOST_DOWN = 4015
    PASSWORD_CHANGED = 4016
    DEACTIVATED = 4017
    SERIAL_BUSY = 4018
    TAKEN_OVER = 4019
    ENDED_BY_ADMIN = 4020
    IDLE = 4021
    TOO_LONG = 4022
    SHARE_ENDED = 4023
    VIEW_ONLY = 4024
    PROTOCOL_VIOLATION = 4025
    TOKEN_REVOKED = 4026
    CONSOLE_REFUSED = 4027
    DATABASE_DOWN = 4028
    VM_MOVED = 4029

    @property
    def reason(self) -> str:
        return _ENDS[self][0]

    @property
    def advice(self) -> str:
        return _ENDS[self][1]

    @property
    def message(self) -> str:  # the name refusals used before: the record's words
        return self.reason

    @property
    def reconnects(self) -> bool:
        """Whether the page reconnects by itself after it (another worker will take it)."""
        return self in (
            End.CONNECTION_LOST,
            End.WORKER_STOPPING,
            End.PROXY_BUSY,
            End.DATABASE_DOWN,
            End.VM_MOVED,
        )


# code: (what the record keeps, what the page tells the user)
_ENDS: dict[End, tuple[str, str]] = {
    End.CONNECTION_LOST: ("connection lost", gettext_noop("the connection to the portal was lost")),
    End.WORKER_STOPPING: ("worker stopped", gettext_noop("the portal restarted")),
    End.PROXY_BUSY: ("proxy busy", gettext_noop("the console proxy is busy; try again shortly")),
    End.FOREIGN_ORIGIN: (
        "the page is not served by this portal",
        gettext_noop("this page is not served by the portal (Origin refused)"),
    ),
    End.NOT_LOGGED_IN: (
        "not logged in",
        gettext_noop("you are not logged in; log in again and press Reconnect"),
    ),
    End.UNKNOWN_TICKET: (
        "unknown console ticket",
        gettext_noop("the console ticket is unknown; press Reconnect"),
    ),
    End.EXPIRED: (
        "the console ticket has expired",
        gettext_noop("the console ticket expired before the connection was made; press Reconnect"),
    ),
    End.EXHAUSTED: (
        "the console ticket has been used up",
        gettext_noop("the console ticket has been used up; press Reconnect"),
    ),
    End.OTHER_USER: (
        "the console ticket belongs to another user",
        gettext_noop("the console ticket belongs to another user"),
    ),
    End.OTHER_VM: (
        "the console ticket is for another VM",
        gettext_noop("the console ticket is for another VM"),
    ),
    End.FORBIDDEN: (
        "you may no longer use this VM",
        gettext_noop("you may no longer use this VM (it may have been given to someone else)"),
    ),
    End.LOGGED_OUT: (
        "you logged out (or your login expired)",
        gettext_noop("you logged out (or your login expired); log in again to reopen the console"),
    ),
    End.UNREACHABLE: ("console unreachable", gettext_noop("the VM's console does not accept connections")),
    End.CONSOLE_ENDED: (
        "console closed",
        gettext_noop("the VM closed its console (it was shut down or restarted)"),
    ),
    End.WRONG_PATH: (
        "the console ticket was issued for another console proxy",
        gettext_noop("the console ticket was issued for another console proxy; press Reconnect"),
    ),
    End.VM_RESTARTED: (
        "the VM stopped or restarted since the ticket was issued",
        gettext_noop("the VM stopped or restarted since this console was opened; press Reconnect"),
    ),
    End.TOO_MANY_CONSOLES: (
        "you have too many consoles open",
        gettext_noop("you have too many consoles open; close one and press Reconnect"),
    ),
    End.HOST_DOWN: (
        "the VM's host does not answer",
        gettext_noop("the VM's host does not answer; try again when it is back"),
    ),
    End.PASSWORD_CHANGED: (
        "your password was changed",
        gettext_noop("your password was changed; log in again to reopen the console"),
    ),
    End.DEACTIVATED: ("your account was deactivated", gettext_noop("your account was deactivated")),
    End.SERIAL_BUSY: (
        "someone else has the serial console open",
        gettext_noop("someone else has the serial console open"),
    ),
    End.TAKEN_OVER: (
        "an administrator took over the serial console",
        gettext_noop("someone took over the serial console"),
    ),
    End.ENDED_BY_ADMIN: (
        "an administrator ended this console session",
        gettext_noop("an administrator ended this console session"),
    ),
    End.IDLE: (
        "the console was idle too long (console.idleTimeoutMinutes)",
        gettext_noop("the console was idle too long (no key press or mouse move); press Reconnect"),
    ),
    End.TOO_LONG: (
        "the console reached its maximum length (console.maxSessionMinutes)",
        gettext_noop("the console reached its maximum length; press Reconnect"),
    ),
    End.SHARE_ENDED: (
        "the owner stopped sharing this console",
        gettext_noop("the owner stopped sharing this console"),
    ),
    End.VIEW_ONLY: (
        "this console is view-only: the channel it asked for is not opened",
        gettext_noop("this console is view-only: its keyboard and mouse channel is not opened"),
    ),
    End.PROTOCOL_VIOLATION: (
        "the client broke the console protocol",
        gettext_noop(
            "the console client sent something the portal does not pass on (a message it does not "
            "know, too large, or not allowed); press Reconnect"
        ),
    ),
    End.TOKEN_REVOKED: (
        "the API token it was opened with was revoked or expired",
        gettext_noop("the API token this console was opened with was revoked or expired"),
    ),
    End.CONSOLE_REFUSED: (
        "the VM's console refused the portal",
        gettext_noop("the VM's console refused the portal's credentials; press Reconnect"),
    ),
    End.DATABASE_DOWN: (
        "the portal's database does not answer",
        gettext_noop("the portal's database does not answer (consoles already open keep working)"),
    ),
    End.VM_MOVED: (
        "the VM moved to another host",
        gettext_noop("the VM is moving to another host; its console follows"),
    ),
}


class Refused(Exception):
    """A console connection refused (or to be ended) for `end`."""

    def __init__(self, end: End, detail: str = "") -> None:
        super().__init__(detail or end.reason)
        self.end = end
        self.detail = detail or end.reason


def end_table() -> dict[str, object]:
    """What the console pages' JavaScript knows of ends (rendered into each page)."""
    return {
        "advice": {str(int(end)): gettext(end.advice) for end in End},  # in the page's language
        "codes": {end.name: int(end) for end in End},
        "reconnect": [int(end) for end in End if end.reconnects],
    }
