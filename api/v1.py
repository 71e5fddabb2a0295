"""The REST API, version 1: what the pages do, for scripts and other front ends.

The same functions as the pages (access check, VM actions, tickets, .vv files, the settings
registry), so no rule has a second implementation. One error model: every error is
`{"error": {"code": ..., "message": ..., "field": ...}}` with its HTTP status.
"""

from datetime import datetime
from typing import Literal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError
from django.db.models import Count
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from ninja import Field, NinjaAPI, Query, Router, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.security import HttpBearer, django_auth

from console.access import vm_get_for_user, vm_may_administer
from console.apitokens import api_token_find
from console.audit import AuditFilter, audit_csv, audit_rows
from console.auth import AuthenticatedRequest
from console.automation import vm_keys, vm_screenshot, vm_type
from console.errors import DATABASE_DOWN, Invalid, PortalError
from console.globalconfig import (
    CONSOLE_MODE,
    DEFINITIONS,
    UnknownSetting,
    config_set,
    config_value,
    definition_get,
)
from console.hosts import host_checks
from console.hypervisor import HypervisorError, HypervisorUnavailable
from console.livemigration import live_migration_payload, vm_migrate
from console.maintenance import host_maintenance_enter, host_maintenance_leave, host_maintenance_payload
from console.models import (
    ConsoleRecording,
    ConsoleSession,
    ConsoleTicket,
    GlobalConfigChange,
    Host,
    VirtualMachine,
    VmEvent,
    VmGrant,
)
from console.origins import client_ip
from console.recordings import recording_file, recording_may_play, recording_played, recording_policy
from console.sessions import console_session_end_request
from console.tickets import console_ticket_issue
from console.vms import VmStatus, vm_poweroff, vm_reboot, vm_shutdown, vm_start, vm_status, vm_statuses
from console.vvfiles import vv_file_issue


class TokenAuth(HttpBearer):
    """`Authorization: Bearer vcp_…`: a token its user made on their profile page."""

    def authenticate(self, request: HttpRequest, token: str):
        found = api_token_find(token)
        if found is None:
            return None
        request.user = found.user
        request.api_token_id = found.pk  # type: ignore[attr-defined]  # the tickets it opens end with it
        return found.user


api = NinjaAPI(
    title="VM console portal API",
    version="1",
    description="VMs, their consoles and the portal's settings. Authenticate with a token made on "
    "your profile page (`Authorization: Bearer vcp_…`), or with the portal's login session (and its "
    "CSRF token) from its own pages.",
    auth=[TokenAuth(), django_auth],
    urls_namespace="api-v1",
    openapi_url="/schema/",
    docs_url="/docs/",
)


# -- one error model ---------------------------------------------------------------------------


class ErrorDetail(Schema):
    code: str = Field(description="Stable, machine-readable.")
    message: str = Field(description="What happened and what to do, in words.")
    field: str | None = Field(None, description="The input field at fault, for validation errors.")


class ErrorOut(Schema):
    error: ErrorDetail


def _error(
    request: AuthenticatedRequest,
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers=None,
):
    response = api.create_response(
        request, {"error": {"code": code, "message": message, "field": field}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@api.exception_handler(PortalError)
def _portal_error(request: AuthenticatedRequest, exc: PortalError):
    return _error(request, exc.status, exc.code, exc.message, field=exc.field, headers=exc.headers())


@api.exception_handler(DatabaseError)
def _database_down(request: AuthenticatedRequest, exc: DatabaseError):
    return _error(request, 503, DATABASE_DOWN.code, DATABASE_DOWN.message, headers=DATABASE_DOWN.headers())


@api.exception_handler(HypervisorUnavailable)
def _host_down(request: AuthenticatedRequest, exc: HypervisorUnavailable):
    detail = f": {exc.message}" if request.user.is_staff else ""
    return _error(request, 503, "host_unavailable", f"host {exc.host} does not answer{detail}")


@api.exception_handler(HypervisorError)
def _hypervisor_error(request: AuthenticatedRequest, exc: HypervisorError):
    # libvirt's words can quote paths and configuration on the host: staff only.
    detail = str(exc) if request.user.is_staff else "an administrator can see why in the log"
    return _error(request, 502, "hypervisor_error", f"the hypervisor refused: {detail}")


@api.exception_handler(Http404)
def _not_found(request: AuthenticatedRequest, exc):
    return _error(request, 404, "not_found", str(exc) or "Not found.")


@api.exception_handler(AuthenticationError)
def _unauthorized(request: AuthenticatedRequest, exc):
    response = _error(
        request, 401, "unauthorized", "Authenticate with a valid, unexpired API token (Bearer) or log in."
    )
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@api.exception_handler(NinjaValidationError)
def _invalid(request: AuthenticatedRequest, exc: NinjaValidationError):
    first = exc.errors[0] if exc.errors else {}
    field = ".".join(str(part) for part in first.get("loc", [])[1:]) or None
    return _error(request, 422, "invalid", first.get("msg", "Invalid input."), field=field)


@api.exception_handler(HttpError)
def _http_error(request: AuthenticatedRequest, exc: HttpError):
    codes = {403: "staff_only", 405: "method_not_allowed"}
    return _error(request, exc.status_code, codes.get(exc.status_code, "error"), str(exc))


def _staff(request: AuthenticatedRequest) -> None:
    if not request.user.is_staff:
        raise HttpError(403, "Only staff may use this endpoint.")


# -- VMs -------------------------------------------------------------------------------------------


class VmOut(Schema):
    id: int
    name: str
    host: str
    owner: str
    state: str = Field(
        description="libvirt's state in words, 'missing' if not defined, 'unknown' if the host is down."
    )
    console_mode: str = Field(
        description="The protocol a start would use now (kvm.consoleMode or the VM's own)."
    )
    running_mode: str | None = Field(description="The protocol the running VM has (until it restarts).")
    restart_required: bool
    serial_console: bool
    video: str = Field(
        description="The display device a start gives it: 'standard', or 'virtio' (virtio-gpu: "
        "the guest's screen follows the console's window)."
    )
    url: str


def _vm_out(vm: VirtualMachine, status: VmStatus | HypervisorError, global_mode: str = "") -> dict:
    known = status if isinstance(status, VmStatus) else None
    return {
        "id": vm.id,
        "name": vm.name,
        "host": vm.host.name,
        "owner": vm.owner.get_username(),
        "state": known.state if known else "unknown",
        "console_mode": known.effective_mode if known else vm.effective_console_mode(global_mode),
        "running_mode": known.running_mode if known else None,
        "restart_required": known.restart_required if known else False,
        "serial_console": vm.serial_console,
        "video": vm.video,
        "url": reverse("api-v1:vm-get", args=[vm.id]),
    }


class VmFilters(Schema):
    host: str | None = Field(None, description="Only VMs on the host of this name.")
    state: str | None = Field(None, description="Only VMs in this state, e.g. running, 'shut off'.")
    ordering: Literal["name", "-name", "id", "-id", "host", "-host"] = "name"


vms = Router(tags=["VMs"])


class VmPage(LimitOffsetPagination):
    """A page of VMs: the query is sliced first, and only the page's rows are built (one
    libvirt call per host); `hosts_unavailable` names the hosts that did not answer, whose VMs
    are listed with the state "unknown"."""

    class Output(Schema):
        items: list[VmOut]
        count: int
        hosts_unavailable: list[str]

    items_attribute = "items"

    def paginate_queryset(self, queryset, pagination, request, **params):
        offset, limit = pagination.offset, pagination.limit
        page = list(queryset[offset : offset + limit])
        statuses = vm_statuses(page)
        global_mode = config_value(CONSOLE_MODE)
        down = sorted({vm.host.name for vm in page if isinstance(statuses[vm.id], HypervisorError)})
        return {
            "items": [_vm_out(vm, statuses[vm.id], global_mode) for vm in page],
            "count": queryset.count(),
            "hosts_unavailable": down,
        }


@vms.get("/", response=list[VmOut], url_name="vm-list")
@paginate(VmPage)
def vm_list(request: AuthenticatedRequest, filters: Query[VmFilters]):
    """The VMs you may use (all of them for staff), with their live state, a page at a time
    (`limit` at most 500)."""
    ordering = filters.ordering.replace("host", "host__name")
    rows = (
        VirtualMachine.objects.visible_to(request.user)
        .select_related("host", "owner")
        .order_by(ordering, "id")
    )
    if filters.host:
        rows = rows.filter(host__name=filters.host)
    if filters.state:
        # The state is libvirt's: one call per host for every matching VM, then the page.
        statuses = vm_statuses(list(rows))
        wanted = [
            vm_id
            for vm_id, status in statuses.items()
            if (status.state if isinstance(status, VmStatus) else "unknown") == filters.state
        ]
        rows = rows.filter(pk__in=wanted)
    return rows


@vms.get("/{int:vm_id}/", response={200: VmOut, 404: ErrorOut, 503: ErrorOut}, url_name="vm-get")
def vm_get(request: AuthenticatedRequest, vm_id: int):
    """One VM with its live state; another user's VM is not found."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    return _vm_out(vm, vm_status(vm))


def _action_view(action: str, run):
    def view(request: AuthenticatedRequest, vm_id: int):
        vm = vm_get_for_user(user=request.user, vm_id=vm_id)
        run(vm=vm, user=request.user)
        return _vm_out(vm, vm_status(vm))

    view.__name__ = f"vm_{action}"
    return view


for _action, _run, _summary in (
    ("start", vm_start, "Start the VM with its effective console mode."),
    ("shutdown", vm_shutdown, "Ask the guest to shut down (ACPI)."),
    ("poweroff", vm_poweroff, "Power the VM off at once."),
    ("reboot", vm_reboot, "Power-cycle the VM, applying a changed console mode."),
):
    vms.post(
        f"/{{int:vm_id}}/{_action}/",
        response={200: VmOut, 404: ErrorOut, 409: ErrorOut, 503: ErrorOut},
        url_name=f"vm-{_action}",
        summary=_summary,
        operation_id=f"api_v1_vm_{_action}",
    )(_action_view(_action, _run))


class MigrateIn(Schema):
    host: str = Field(description="The name of the host to move the VM to (it needs a migration address).")
    wait: bool = Field(False, description="Answer once the move ended (moved or failed), not at once.")


class MigrationOut(Schema):
    id: int
    state: str = Field(description="running, done (moved) or failed (the VM stayed where it was).")
    source: str | None
    target: str | None
    percent: int
    data_total: int = Field(description="Bytes of the VM's memory to move.")
    data_remaining: int
    downtime_ms: int | None = Field(description="How long the VM was paused at the switch.")
    elapsed_ms: int | None = Field(description="How long the move took, as libvirt measured it.")
    started_at: datetime
    ended_at: datetime | None
    error: str


@vms.post(
    "/{int:vm_id}/migrate/",
    response={
        202: MigrationOut,
        200: MigrationOut,
        403: ErrorOut,
        404: ErrorOut,
        422: ErrorOut,
        503: ErrorOut,
    },
    url_name="vm-migrate",
)
def vm_migrate_api(request: AuthenticatedRequest, vm_id: int, body: MigrateIn):
    """Live-migrate the running VM to another host (staff only): 202 with the move's record, which
    `GET .../migration/` follows; its open consoles follow by themselves."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    target = Host.objects.filter(name=body.host).first()
    if target is None:
        raise Invalid(f"No host is named {body.host!r}.", field="host")
    migration = vm_migrate(vm=vm, target=target, user=request.user, wait=body.wait)
    return Status(200 if body.wait else 202, live_migration_payload(migration))


@vms.get("/{int:vm_id}/migration/", response={200: MigrationOut, 404: ErrorOut}, url_name="vm-migration")
def vm_migration_api(request: AuthenticatedRequest, vm_id: int):
    """The VM's latest move: its state and progress."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    migration = vm.live_migrations.select_related("source", "target").first()
    if migration is None:
        raise Http404("The VM was never moved.")
    return live_migration_payload(migration)


class TypeIn(Schema):
    text: str = Field(description="What to type; a newline presses Enter.", max_length=4096)
    layout: str | None = Field(
        None, description="us, uk, de, fr or ch; default: the VM's layout, else your default."
    )


class TypeOut(Schema):
    typed: int = Field(description="Characters typed.")
    keystrokes: int
    layout: str


class KeysIn(Schema):
    keys: list[str] = Field(description='Combinations pressed in turn, e.g. ["ctrl+alt+f2", "enter"].')


class KeysOut(Schema):
    pressed: int


@vms.post(
    "/{int:vm_id}/type/",
    response={200: TypeOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    url_name="vm-type",
)
def vm_type_api(request: AuthenticatedRequest, vm_id: int, body: TypeIn):
    """Type text into the running VM in its keyboard layout (AltGr and dead keys included),
    through libvirt without opening its console. A character the layout cannot type refuses the
    whole text (422, naming it) before any key is pressed. Audited without the text."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    return vm_type(vm=vm, user=request.user, text=body.text, layout=body.layout)


@vms.post(
    "/{int:vm_id}/keys/",
    response={200: KeysOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    url_name="vm-keys",
)
def vm_keys_api(request: AuthenticatedRequest, vm_id: int, body: KeysIn):
    """Press key combinations on the running VM (ctrl+alt+delete, alt+f2, super+l, enter; keys
    named by their place on a US keyboard), through libvirt without opening its console."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    return vm_keys(vm=vm, user=request.user, combinations=body.keys)


@vms.get(
    "/{int:vm_id}/screenshot.png",
    response={200: None, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    url_name="vm-screenshot",
)
def vm_screenshot_api(request: AuthenticatedRequest, vm_id: int):
    """The running VM's screen, full size, as PNG (libvirt's screenshot: no console is opened)."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    response = HttpResponse(vm_screenshot(vm=vm, user=request.user), content_type="image/png")
    response["Cache-Control"] = "no-store"
    return response


class GrantIn(Schema):
    role: str = Field(description="viewer, operator or admin.")
    user: str | None = Field(None, description="A username; or give group.")
    group: str | None = Field(None, description="A group's name; or give user.")


class GrantOut(Schema):
    id: int
    role: str
    user: str | None
    group: str | None
    granted_by: str | None
    created_at: datetime


def _grant_out(grant: VmGrant) -> dict:
    return {
        "id": grant.pk,
        "role": grant.role,
        "user": grant.user.get_username() if grant.user else None,
        "group": grant.group.name if grant.group else None,
        "granted_by": grant.granted_by.get_username() if grant.granted_by else None,
        "created_at": grant.created_at,
    }


def _vm_for_admin(request: AuthenticatedRequest, vm_id: int) -> VirtualMachine:
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    if not vm_may_administer(request.user, vm):
        raise HttpError(403, "Only the VM's owner, its admins and staff manage who may use it.")
    return vm


@vms.get(
    "/{int:vm_id}/grants/", response={200: list[GrantOut], 403: ErrorOut, 404: ErrorOut}, url_name="vm-grants"
)
def vm_grants_api(request: AuthenticatedRequest, vm_id: int):
    """Who else may watch or operate the VM (roles on it; a host's grants are staff's, in admin)."""
    vm = _vm_for_admin(request, vm_id)
    return [_grant_out(g) for g in vm.grants.select_related("user", "group", "granted_by").order_by("pk")]


@vms.post(
    "/{int:vm_id}/grants/",
    response={201: GrantOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut},
    url_name="vm-grant-create",
)
def vm_grant_create_api(request: AuthenticatedRequest, vm_id: int, body: GrantIn):
    """Grant a role on the VM to a user or a group: viewer (watch its console), operator
    (console, serial, .vv, power) or admin (that and sharing)."""
    vm = _vm_for_admin(request, vm_id)
    if body.role not in VmGrant.Role.values:
        raise Invalid("role is viewer, operator or admin.", field="role")
    if bool(body.user) == bool(body.group):
        raise Invalid("Give a user or a group, not both.", field="user")
    user = get_user_model().objects.filter(username=body.user).first() if body.user else None
    group = Group.objects.filter(name=body.group).first() if body.group else None
    if body.user and user is None:
        raise Invalid(f"No user is named {body.user!r}.", field="user")
    if body.group and group is None:
        raise Invalid(f"No group is named {body.group!r}.", field="group")
    grant = VmGrant.objects.create(vm=vm, user=user, group=group, role=body.role, granted_by=request.user)
    VmEvent.objects.create(vm=vm, user=request.user, action="grant", detail=str(grant)[:255])
    return Status(201, _grant_out(grant))


@vms.delete(
    "/{int:vm_id}/grants/{int:grant_id}/",
    response={204: None, 403: ErrorOut, 404: ErrorOut},
    url_name="vm-grant-delete",
)
def vm_grant_delete_api(request: AuthenticatedRequest, vm_id: int, grant_id: int):
    """Take a role back: open consoles it allowed end at their next check."""
    vm = _vm_for_admin(request, vm_id)
    grant = vm.grants.filter(pk=grant_id).first()
    if grant is None:
        raise Http404("No such grant on this VM.")
    VmEvent.objects.create(vm=vm, user=request.user, action="ungrant", detail=str(grant)[:255])
    grant.delete()
    return Status(204, None)


class TicketOut(Schema):
    protocol: str
    websocket_url: str = Field(
        description="Open it within `expires_at`; binary frames carry the console. The portal's proxy "
        "authenticates to the VM itself: speak VNC with the security type None, or SPICE with any "
        "password (it is not checked; the ticket is)."
    )
    token: str
    expires_at: datetime
    recorded: bool = Field(description="The console is recorded (console.recording): tell its user.")
    keystrokes_recorded: bool = Field(description="Which keys the user presses is recorded too.")


@vms.post(
    "/{int:vm_id}/console-ticket/",
    response={200: TicketOut, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    url_name="vm-console-ticket",
)
def vm_console_ticket(
    request: AuthenticatedRequest,
    vm_id: int,
    origin: str = Query(
        "",
        description="The origin (scheme://host[:port]) of the page that will open the WebSocket; "
        "when given, only a WebSocket from it is admitted.",
    ),
):
    """A ticket to the VM's graphical console, for embedding it in another front end: the
    WebSocket admits it without a login cookie, from `origin` if given."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    if origin and not _is_origin(origin):
        return _error(request, 422, "invalid", "origin must be scheme://host[:port]", field="origin")
    issued = console_ticket_issue(
        user=request.user,
        vm=vm,
        kind=ConsoleTicket.Kind.API,
        origin=origin,
        session_key=_session_key(request),
        api_token_id=getattr(request, "api_token_id", None),
    )
    scheme = "wss" if request.is_secure() else "ws"
    path = reverse("console-ws", args=[vm.id])
    policy = recording_policy(vm)
    return {
        "protocol": issued.protocol,
        "websocket_url": f"{scheme}://{request.get_host()}{path}?token={issued.token}",
        "token": issued.token,
        "expires_at": issued.expires_at,
        "recorded": policy.record,
        "keystrokes_recorded": policy.keystrokes,
    }


def _session_key(request: AuthenticatedRequest) -> str:
    """The login session a request came with (the pages' own API calls), whose end ends the
    consoles it opened; "" for a token's request."""
    if getattr(request, "api_token_id", None) is not None:
        return ""
    return request.session.session_key or ""


def _is_origin(value: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.path and not parts.query


@vms.post(
    "/{int:vm_id}/console.vv",
    response={200: None, 404: ErrorOut, 409: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    url_name="vm-console-vv",
    openapi_extra={"responses": {200: {"content": {"application/x-virt-viewer": {}}}}},
)
def vm_console_vv(request: AuthenticatedRequest, vm_id: int, fullscreen: bool = False):
    """A .vv file for virt-viewer (remote-viewer): through the SPICE proxy, with a one-time
    password the proxy checks; naming the host, with a short-lived graphics password."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    download = vv_file_issue(
        user=request.user,
        vm=vm,
        fullscreen=fullscreen,
        session_key=_session_key(request),
        api_token_id=getattr(request, "api_token_id", None),
        client_address=client_ip(request.META.get("REMOTE_ADDR")),
    )
    response = HttpResponse(download.text, content_type="application/x-virt-viewer")
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    add_never_cache_headers(response)
    return response


# -- console sessions ------------------------------------------------------------------------------


class SessionOut(Schema):
    id: int
    user: str | None
    vm: str | None
    vm_id: int | None
    host: str | None
    worker: str
    ended_by: str | None
    via: str
    protocol: str
    client_address: str | None
    started_at: datetime
    ended_at: datetime | None
    bytes_to_client: int
    bytes_from_client: int
    end_reason: str
    recording: str | None = Field(None, description="Where its recording is, if it was recorded.")

    @staticmethod
    def resolve_user(s: ConsoleSession) -> str | None:
        return s.user.get_username() if s.user else None

    @staticmethod
    def resolve_vm(s: ConsoleSession) -> str | None:
        return s.vm.name if s.vm else None

    @staticmethod
    def resolve_host(s: ConsoleSession) -> str | None:
        return s.vm.host.name if s.vm else None

    @staticmethod
    def resolve_ended_by(s: ConsoleSession) -> str | None:
        return s.ended_by.get_username() if s.ended_by else None

    @staticmethod
    def resolve_recording(s: ConsoleSession) -> str | None:
        recording = getattr(s, "recording", None)
        return reverse("api-v1:session-recording", args=[s.pk]) if recording is not None else None


sessions = Router(tags=["Console sessions"])


@sessions.get("/", response=list[SessionOut], url_name="session-list")
@paginate(LimitOffsetPagination)
def session_list(
    request: AuthenticatedRequest,
    open: bool | None = None,
    ordering: Literal["started_at", "-started_at"] = "-started_at",
):
    """Your console sessions (everyone's for staff), newest first; `open=true` for open ones."""
    rows = ConsoleSession.objects.select_related("user", "vm__host", "ended_by", "recording").order_by(
        ordering, "-id"
    )
    if not request.user.is_staff:
        rows = rows.filter(user=request.user)
    if open is not None:
        rows = rows.filter(ended_at__isnull=open)
    return rows  # sliced to the page by the pagination, in the database


@sessions.post(
    "/{int:session_id}/end/", response={200: SessionOut, 403: ErrorOut, 404: ErrorOut}, url_name="session-end"
)
def session_end(request: AuthenticatedRequest, session_id: int):
    """End an open console session wherever it runs (staff): the user's page says an
    administrator ended it (close code 4020), and the record names who did."""
    _staff(request)
    if not console_session_end_request(session_id=session_id, by=request.user):
        raise Http404("No open console session with this id.")
    return ConsoleSession.objects.select_related("user", "vm__host", "ended_by").get(pk=session_id)


@sessions.get(
    "/{int:session_id}/recording",
    response={200: None, 404: ErrorOut},
    url_name="session-recording",
    openapi_extra={"responses": {200: {"content": {"application/octet-stream": {}}}}},
)
def session_recording(request: AuthenticatedRequest, session_id: int):
    """The session's recording (staff; the session's own user if console.recordingPlayback
    allows): the portal's stream format for VNC and SPICE, asciicast v2 for the serial console.
    Every download is recorded."""
    recording = ConsoleRecording.objects.filter(session_id=session_id).first()
    if recording is None or not recording_may_play(user=request.user, recording=recording):
        raise Http404("No recording of this session.")
    try:
        handle = recording_file(recording).open("rb")
    except (OSError, ValueError):
        raise Http404("The recording's file is gone.") from None
    recording_played(recording=recording, user=request.user, via="api")
    return FileResponse(handle, content_type="application/octet-stream")


# -- hosts (staff) ---------------------------------------------------------------------------------


class HostOut(Schema):
    id: int
    name: str
    uri: str
    up: bool
    health: str = Field(description="libvirt's version, or why the host does not answer.")
    vm_count: int
    maintenance: bool = Field(description="In maintenance: no VM starts or moves there.")


class MaintenanceIn(Schema):
    wait: bool = Field(False, description="Answer once every running VM was tried, not at once.")


class MaintenanceEntry(Schema):
    vm: str
    moved_to: str | None = None
    stayed: str | None = Field(None, description="Why the VM could not move.")


class MaintenanceOut(Schema):
    id: int
    host: str
    state: str = Field(description="emptying, empty, incomplete (some VMs stayed) or ended.")
    in_maintenance: bool
    started_at: datetime
    emptied_at: datetime | None
    ended_at: datetime | None
    summary: list[MaintenanceEntry] = Field(description="Each running VM: where it moved, or why it stayed.")


hosts = Router(tags=["Hosts (staff)"])


def _host(request: AuthenticatedRequest, host_id: int) -> Host:
    _staff(request)
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        raise Http404("No such host.")
    return host


@hosts.post(
    "/{int:host_id}/maintenance/",
    response={202: MaintenanceOut, 200: MaintenanceOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    url_name="host-maintenance-enter",
)
def host_maintenance_enter_api(request: AuthenticatedRequest, host_id: int, body: MaintenanceIn):
    """Put the host in maintenance: no VM starts or moves there, and its running VMs live-migrate,
    one at a time, to the least loaded other host that answers (202; `GET` follows). Again once
    emptying ended: retries what stayed."""
    host = _host(request, host_id)
    maintenance = host_maintenance_enter(host=host, user=request.user, wait=body.wait)
    return Status(200 if body.wait else 202, host_maintenance_payload(maintenance))


@hosts.delete(
    "/{int:host_id}/maintenance/",
    response={200: MaintenanceOut, 403: ErrorOut, 404: ErrorOut},
    url_name="host-maintenance-leave",
)
def host_maintenance_leave_api(request: AuthenticatedRequest, host_id: int):
    """End the host's maintenance: VMs start and move there again."""
    host = _host(request, host_id)
    ended = host_maintenance_leave(host=host, user=request.user)
    if ended is None:
        raise Http404(f"{host.name} is not in maintenance.")
    return host_maintenance_payload(ended)


@hosts.get(
    "/{int:host_id}/maintenance/",
    response={200: MaintenanceOut, 403: ErrorOut, 404: ErrorOut},
    url_name="host-maintenance",
)
def host_maintenance_api(request: AuthenticatedRequest, host_id: int):
    """The host's latest maintenance: what moved where, what stayed and why."""
    host = _host(request, host_id)
    latest = host.maintenances.first()
    if latest is None:
        raise Http404(f"{host.name} was never in maintenance.")
    return host_maintenance_payload(latest)


@hosts.get("/", response={200: list[HostOut], 403: ErrorOut}, url_name="host-list")
@paginate(LimitOffsetPagination)
def host_list(request: AuthenticatedRequest):
    """Every hypervisor host with its health, checked side by side (staff only)."""
    _staff(request)
    rows = list(Host.objects.order_by("name"))
    health = host_checks(rows)
    counts = dict(
        VirtualMachine.objects.values("host_id").annotate(n=Count("id")).values_list("host_id", "n")
    )
    return [
        {
            "id": h.id,
            "name": h.name,
            "uri": h.uri,
            "up": health[h.id].ok,
            "health": health[h.id].text,
            "vm_count": counts.get(h.id, 0),
            "maintenance": h.maintenance,
        }
        for h in rows
    ]


# -- audit trail (staff) -----------------------------------------------------------------------------


class AuditRowOut(Schema):
    at: datetime
    kind: str = Field(description="auth, vm, console, share, recording, setting or migration.")
    action: str
    user: str
    vm: str
    detail: str


audit = Router(tags=["Audit (staff)"])


@audit.get("/", response={200: list[AuditRowOut], 403: ErrorOut, 422: ErrorOut}, url_name="audit")
def audit_api(
    request: AuthenticatedRequest,
    user: str = "",
    vm: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    format: str = "json",  # noqa: A002 - the query parameter's name
):
    """The audit trail, newest first (staff only): logins, VM actions, console sessions, shares,
    recordings played, settings changed, live migrations; by `user` (username), `vm` (name) and
    time (`since`, `until`, ISO 8601), at most `limit` rows (10 000); `format=csv` for CSV."""
    _staff(request)
    if format not in ("json", "csv"):
        raise Invalid("format is json or csv.", field="format")
    rows = audit_rows(AuditFilter(user=user, vm=vm, since=since, until=until, limit=limit))
    if format == "csv":
        response = HttpResponse(audit_csv(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit.csv"'
        return response
    return rows


# -- global configuration (staff) -------------------------------------------------------------------


class SettingOut(Schema):
    key: str
    value: str
    default: str
    type: str
    valid_values: list[str]
    description: str


class SettingIn(Schema):
    value: str | None = Field(description="The new value; null resets to the default.")


class ChangeOut(Schema):
    key: str
    old_value: str
    new_value: str
    actor: str
    changed_at: datetime


config = Router(tags=["Global configuration (staff)"])


def _setting_out(key: str) -> dict:
    d = definition_get(key)
    return {
        "key": key,
        "value": config_value(key),
        "default": d.default,
        "type": d.type,
        "valid_values": list(d.valid_values),
        "description": d.description,
    }


def _setting_key(request: AuthenticatedRequest, key: str) -> str:
    _staff(request)
    try:
        definition_get(key)
    except UnknownSetting as exc:
        raise Http404(str(exc)) from None
    return key


@config.get("/", response={200: list[SettingOut], 403: ErrorOut}, url_name="config-list")
@paginate(LimitOffsetPagination)
def config_list(request: AuthenticatedRequest):
    """Every global setting with its value (the registry that admin and `manage.py globalconfig` use)."""
    _staff(request)
    return [_setting_out(key) for key in sorted(DEFINITIONS)]


@config.get("/{key}/", response={200: SettingOut, 403: ErrorOut, 404: ErrorOut}, url_name="config-get")
def config_get(request: AuthenticatedRequest, key: str):
    return _setting_out(_setting_key(request, key))


@config.put(
    "/{key}/", response={200: SettingOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}, url_name="config-set"
)
def config_put(request: AuthenticatedRequest, key: str, body: SettingIn):
    """Set a value, validated as in admin, and recorded in the change history with who set it."""
    key = _setting_key(request, key)
    try:
        config_set(key=key, value=body.value, actor=f"api:{request.user.get_username()}", user=request.user)
    except DjangoValidationError as exc:
        return _error(request, 422, "invalid", " ".join(exc.messages), field="value")
    return _setting_out(key)


@config.get(
    "/{key}/history/",
    response={200: list[ChangeOut], 403: ErrorOut, 404: ErrorOut},
    url_name="config-history",
)
@paginate(LimitOffsetPagination)
def config_history(request: AuthenticatedRequest, key: str):
    """Who changed the setting, when, from what to what; newest first."""
    key = _setting_key(request, key)
    category, name = key.split(".", 1)
    return [
        {
            "key": key,
            "old_value": c.old_value,
            "new_value": c.new_value,
            "actor": c.actor,
            "changed_at": c.changed_at,
        }
        for c in GlobalConfigChange.objects.filter(category=category, name=name)
    ]


api.add_router("/vms/", vms)
api.add_router("/sessions/", sessions)
api.add_router("/hosts/", hosts)
api.add_router("/config/", config)
api.add_router("/audit/", audit)
