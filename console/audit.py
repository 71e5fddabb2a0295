"""The audit trail, in one place: logins, VM actions, console sessions, shares, recordings
played, settings changed and live migrations, as rows of one shape, newest first, filtered by
user, VM and time; as JSON (the API) or CSV (the API and admin).

Each kind of record stays in its own table (written where it happens); this module only reads
them, one query per kind, each bounded by `limit`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models import QuerySet

from console.models import (
    AuthEvent,
    ConsoleSession,
    ConsoleShare,
    GlobalConfigChange,
    LiveMigration,
    RecordingPlayback,
    VmEvent,
)
from console.origins import client_ip

if TYPE_CHECKING:
    from django.http import HttpRequest

MAX_ROWS = 10000
COLUMNS = ("at", "kind", "action", "user", "vm", "detail")


@dataclass(frozen=True)
class AuditFilter:
    user: str = ""  # a username
    vm: str = ""  # a VM's name
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1000


def audit_rows(which: AuditFilter) -> list[dict]:
    """The trail matching `which`, newest first, at most `which.limit` rows."""
    limit = max(1, min(which.limit, MAX_ROWS))
    rows: list[dict] = []
    sessions = ConsoleSession.objects.select_related("user", "vm")
    shares = ConsoleShare.objects.select_related("vm", "viewer", "shared_by")
    sources: list[tuple[QuerySet, str, str | None, str | None, Callable[[Any], dict]]] = [
        (AuthEvent.objects.all(), "at", "username", None, _auth),
        (VmEvent.objects.select_related("user", "vm"), "at", "user__username", "vm__name", _vm_event),
        (sessions, "started_at", "user__username", "vm__name", _opened),
        (sessions.exclude(ended_at=None), "ended_at", "user__username", "vm__name", _closed),
        (shares, "created_at", "shared_by__username", "vm__name", _shared),
        (shares.exclude(ended_at=None), "ended_at", "shared_by__username", "vm__name", _unshared),
        (
            RecordingPlayback.objects.select_related("user", "recording__vm"),
            "at",
            "user__username",
            "recording__vm__name",
            _played,
        ),
        (GlobalConfigChange.objects.all(), "changed_at", "actor", None, _setting),
        (
            LiveMigration.objects.select_related("vm", "source", "target", "requested_by"),
            "started_at",
            "requested_by__username",
            "vm__name",
            _migration,
        ),
    ]
    for records, at, user_field, vm_field, make in sources:
        if which.vm and vm_field is None:
            continue  # not about a VM
        filters: dict[str, object] = {}
        if which.user:
            filters[str(user_field)] = which.user
        if which.vm:
            filters[str(vm_field)] = which.vm
        if which.since:
            filters[f"{at}__gte"] = which.since
        if which.until:
            filters[f"{at}__lt"] = which.until
        rows.extend(make(record) for record in records.filter(**filters).order_by(f"-{at}")[:limit])
    rows.sort(key=lambda row: row["at"], reverse=True)
    return rows[:limit]


def _auth(e: AuthEvent) -> dict:
    return _row(e.at, "auth", e.action, e.username, None, e.client_address or "")


def _vm_event(e: VmEvent) -> dict:
    return _row(e.at, "vm", e.action, _name(e.user), e.vm.name, e.detail)


def _opened(s: ConsoleSession) -> dict:
    return _row(
        s.started_at,
        "console",
        "open",
        _name(s.user),
        _vm(s.vm),
        f"{s.protocol} via {s.via} from {s.client_address}",
    )


def _closed(s: ConsoleSession) -> dict:
    detail = f"{s.end_reason or 'closed'}; {s.bytes_to_client} B out, {s.bytes_from_client} B in"
    return _row(s.ended_at, "console", "close", _name(s.user), _vm(s.vm), detail)


def _shared(s: ConsoleShare) -> dict:
    until = f" until {s.expires_at:%Y-%m-%d %H:%M} UTC" if s.expires_at else ""
    return _row(
        s.created_at,
        "share",
        "share",
        _name(s.shared_by),
        s.vm.name,
        f"with {_name(s.viewer)} as {s.role}{until}",
    )


def _unshared(s: ConsoleShare) -> dict:
    return _row(s.ended_at, "share", "end", _name(s.shared_by), s.vm.name, f"with {_name(s.viewer)}")


def _played(p: RecordingPlayback) -> dict:
    detail = f"recording {p.recording_id} via {p.via}"
    return _row(p.at, "recording", "play", _name(p.user), _vm(p.recording.vm), detail)


def _setting(c: GlobalConfigChange) -> dict:
    detail = f"{c.category}.{c.name}: {c.old_value} -> {c.new_value}"
    return _row(c.changed_at, "setting", "change", c.actor, None, detail)


def _migration(m: LiveMigration) -> dict:
    detail = f"{m.source} -> {m.target} {m.error}".strip()
    return _row(m.started_at, "migration", m.state, _name(m.requested_by), m.vm.name, detail)


def audit_csv(rows: list[dict]) -> str:
    """The rows as CSV; a cell a spreadsheet would take for a formula is quoted as text."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[column]) for column in COLUMNS])
    return out.getvalue()


def _cell(value: object) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value if value is not None else "")
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _row(at: datetime | None, kind: str, action: str, user: str | None, vm: str | None, detail: str) -> dict:
    return {"at": at, "kind": kind, "action": action, "user": user or "", "vm": vm or "", "detail": detail}


def _name(user: Any) -> str:  # a User or None
    return user.get_username() if user is not None else ""


def _vm(vm: Any) -> str:  # a VirtualMachine or None
    return vm.name if vm is not None else ""


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    _auth_event(user, user.get_username(), AuthEvent.Action.LOGIN, request)


def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        _auth_event(user, user.get_username(), AuthEvent.Action.LOGOUT, request)


def _refused(sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any) -> None:
    _auth_event(None, str(credentials.get("username", ""))[:150], AuthEvent.Action.REFUSED, request)


def _auth_event(user: Any, username: str, action: str, request: HttpRequest | None) -> None:
    address = client_ip(request.META.get("REMOTE_ADDR")) if request is not None else None
    AuthEvent.objects.create(user=user, username=username, action=action, client_address=address)


def audit_signals_connect() -> None:
    """Record logins, logouts and refused logins (called once, when the app is ready)."""
    user_logged_in.connect(_logged_in, dispatch_uid="audit-login")
    user_logged_out.connect(_logged_out, dispatch_uid="audit-logout")
    user_login_failed.connect(_refused, dispatch_uid="audit-refused")
