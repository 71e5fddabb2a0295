"""Pages: the VM list, a VM's details, and the actions on it. Views parse, authorize, call, respond."""

from __future__ import annotations

import functools
import logging
import re
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, LogoutView
from django.db import connection
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.formats import date_format
from django.utils.translation import gettext, gettext_noop
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from console.access import (
    vm_get_for_user,
    vm_get_for_watching,
    vm_may_administer,
    vm_may_use,
    vms_watchable_by,
)
from console.apitokens import api_token_create, api_token_revoke
from console.automation import vm_keys, vm_layout, vm_type
from console.control import (
    control_answer,
    control_end,
    control_handed_check,
    control_request,
    control_state,
)
from console.domainxml import resizable_screen
from console.errors import ConsoleUnavailable, Invalid, PortalError, RateLimited, VmStateConflict, end_table
from console.globalconfig import (
    CLIPBOARD,
    IDLE_TIMEOUT,
    RECORDING_PLAYBACK,
    STEP_UP_MINUTES,
    TWO_FACTOR_STAFF,
    config_int,
    config_value,
)
from console.hypervisor import DomainNotFound, DomainNotRunning, HypervisorError, HypervisorUnavailable
from console.keyboard import KEY_MENU, LAYOUT_CHOICES, STICKY_MODIFIERS
from console.livemigration import live_migration_payload, vm_migrate
from console.models import (
    ConsoleModeChoice,
    ConsolePreference,
    ConsoleProtocol,
    ConsoleRecording,
    ConsoleSession,
    ConsoleShare,
    ConsoleTicket,
    Host,
    VirtualMachine,
)
from console.origins import client_ip, request_origin
from console.recordings import (
    recording_file,
    recording_may_play,
    recording_played,
    recording_policy,
    recordings_playable_by,
)
from console.screenshots import vm_thumbnail
from console.sessions import open_sessions
from console.shares import SHARE_HOURS, SHARE_HOURS_DEFAULT, console_share_create, console_share_end
from console.sso import SESSION_ID_TOKEN, sso_enabled, sso_logout_url
from console.tickets import IDLE_KINDS, console_endpoint, console_ticket_issue, serial_ticket_issue
from console.twofactor import (
    recovery_codes_renew,
    safe_next,
    second_factor_verify,
    second_factor_wait,
    step_up_check,
    totp_enrolment,
    totp_enrolment_confirm,
    totp_qr_data_uri,
    totp_secret,
    two_factor_enabled,
    two_factor_remove,
    verify_url,
)
from console.vms import (
    LIST_PAGE_SIZE,
    VmListQuery,
    vm_list_page,
    vm_poweroff,
    vm_reboot,
    vm_serial_log,
    vm_shutdown,
    vm_start,
    vm_status,
)
from console.vvfiles import vv_file_issue
from portal.security import content_security_policy

if TYPE_CHECKING:
    from collections.abc import Callable

    from console.auth import AuthenticatedRequest
    from console.tickets import IssuedTicket
    from console.vvfiles import VvDownload

logger = logging.getLogger(__name__)


@login_required
@never_cache
def two_factor(request: AuthenticatedRequest) -> HttpResponse:
    """Set up two-factor authentication (an authenticator and recovery codes), make new
    recovery codes, or turn it off (with a code, unless policy keeps it on)."""
    user = request.user
    enabled = two_factor_enabled(user)
    if enabled and not user.is_verified():  # type: ignore[attr-defined]  # OTPMiddleware's
        # A password alone never changes the second factor (new recovery codes, another
        # authenticator): that would be a way around it.
        return redirect(verify_url(request.get_full_path()))
    required_by_policy = user.is_staff and config_value(TWO_FACTOR_STAFF) == "true"
    codes = None
    if request.method == "POST":
        action = request.POST.get("action")
        code = request.POST.get("code", "")
        if action == "confirm" and not enabled:
            codes = totp_enrolment_confirm(request, user, code)
            if codes is None:
                messages.error(
                    request, gettext("That code is not right: type the 6 digits the app shows now.")
                )
                return redirect("two-factor")
        elif action == "renew" and two_factor_enabled(user):
            codes = recovery_codes_renew(user)
        elif action == "remove" and not required_by_policy:
            if second_factor_verify(request, user, code):
                two_factor_remove(user)
                messages.success(request, gettext("Two-factor authentication is off."))
            else:
                messages.error(
                    request, gettext("That code is not right; two-factor authentication stays on.")
                )
            return redirect("two-factor")
    context: dict[str, Any] = {
        "enabled": two_factor_enabled(user),
        "required_by_policy": required_by_policy,
        "recovery_codes": codes,
        "step_up_minutes": config_int(STEP_UP_MINUTES),
    }
    if not context["enabled"]:
        device = totp_enrolment(user)
        context.update(qr=totp_qr_data_uri(device), secret=totp_secret(device))
    return render(request, "registration/two_factor.html", context)


@login_required
@never_cache
def two_factor_verify(request: AuthenticatedRequest) -> HttpResponse:
    """The code after the password (or before a console, for step-up)."""
    wanted = safe_next(
        request, request.POST.get("next") or request.GET.get("next", ""), settings.LOGIN_REDIRECT_URL
    )
    if not two_factor_enabled(request.user):
        return redirect(wanted)
    refused = False
    if request.method == "POST":
        if second_factor_verify(request, request.user, request.POST.get("code", "")):
            return redirect(wanted)
        refused = True
    context = {
        "next": wanted,
        "refused": refused,
        "wait": second_factor_wait(request.user) if refused else 0,
        "step_up": request.user.is_verified(),  # type: ignore[attr-defined]  # OTPMiddleware's
    }
    return render(request, "registration/two_factor_verify.html", context, status=400 if refused else 200)


class PortalLogoutView(LogoutView):
    """Django's logout (which ends the user's consoles, console.notices); a session that signed
    in through the identity provider then continues to its end-session page."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        id_token = request.session.get(SESSION_ID_TOKEN, "")
        response = super().post(request, *args, **kwargs)
        if id_token and sso_enabled():
            url = sso_logout_url(request, id_token)
            if url:
                return redirect(url)
        return response


class PortalLoginView(LoginView):
    """Django's login page, which first asks the database: when it does not answer, the page
    says so (503, the failure handler's words) rather than offering a form that cannot work."""

    def dispatch(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        # django-auth-ldap could not reach the directory for this login (console.directory).
        form = kwargs.get("form")
        inactive = form is not None and any(e.code == "inactive" for e in form.non_field_errors().as_data())
        return {
            "sso_name": settings.OIDC_PROVIDER_NAME if sso_enabled() else "",
            "account_inactive": inactive,
            **super().get_context_data(**kwargs),
            "directory_unreachable": getattr(self.request, "directory_unreachable", False),
        }


@login_required
def vm_list(request: AuthenticatedRequest) -> HttpResponse:
    query = VmListQuery.from_params(request.GET)
    rows, total = vm_list_page(request.user, query)
    pages = max(1, -(-total // LIST_PAGE_SIZE))
    unavailable = {
        (vm.host.name, status.message) for vm, status in rows if isinstance(status, HypervisorError)
    }
    shared = vms_watchable_by(request.user).select_related("owner")
    # A host that does not answer makes its own VMs' state unknown (the banner says which),
    # not the list unavailable: 200, as monitors and proxies read it.
    return render(
        request,
        "console/vm_list.html",
        {
            "rows": rows,
            "unavailable": sorted(unavailable),
            "shared": shared,
            "query": query,
            "total": total,
            "pages": pages,
            "previous": _list_url(request, page=query.page - 1) if query.page > 1 else None,
            "next": _list_url(request, page=query.page + 1) if query.page < pages else None,
            "filtered": any((query.q, query.host, query.state, query.owner, query.mode)),
            "hosts": Host.objects.order_by("name").values_list("name", flat=True),
            "states": ["running", "paused", "shut off", "missing", "unknown"],
            "modes": ConsoleModeChoice.choices,
            "sorts": [
                ("name", gettext_noop("name")),
                ("-name", gettext_noop("name, Z to A")),
                ("host", gettext_noop("host")),
                ("state", gettext_noop("state")),
            ]
            + ([("owner", gettext_noop("owner"))] if request.user.is_staff else []),
        },
    )


def _list_url(request: AuthenticatedRequest, **changes: object) -> str:
    params = request.GET.copy()
    for name, value in changes.items():
        params[name] = str(value)
    return f"?{params.urlencode()}"


@login_required
def vm_detail(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    preference = ConsolePreference.objects.filter(user=request.user).first()
    every_open = open_sessions(ConsoleSession.objects.filter(vm=vm))
    consoles = every_open.select_related("user").order_by("started_at")
    if not request.user.is_staff:
        consoles = consoles.filter(user=request.user)
    shares = list(vm.shares.live().select_related("viewer"))
    # Who watches now: the viewers' open sessions, which an owner who is not staff sees only
    # this way (their list of consoles holds their own).
    watching = set(
        every_open.filter(user__in=[s.viewer_id for s in shares]).values_list("user_id", flat=True)
    )
    return render(
        request,
        "console/vm_detail.html",
        {
            "vm": vm,
            "status": vm_status(vm),
            "open_consoles": consoles,
            "shares": [(share, share.viewer_id in watching) for share in shares],
            "share_roles": ConsoleShare.Role.choices,
            "share_hours": SHARE_HOURS.items(),
            "share_hours_default": SHARE_HOURS_DEFAULT,
            "events": vm.events.select_related("user")[:10],
            "vv_fullscreen": preference.vv_fullscreen if preference else False,
            "move_targets": (
                Host.objects.exclude(pk=vm.host_id).exclude(migration_address=None).filter(maintenance=False)
                if request.user.is_staff
                else []
            ),
            "migration": vm.live_migrations.select_related("target").first(),
        },
    )


@login_required
@require_POST
def vm_type_view(request: AuthenticatedRequest, vm_id: int) -> JsonResponse:
    """The console page's "Type text": typed through libvirt in the chosen keyboard layout
    (JSON: what was typed, or why nothing was). A layout chosen for a VM that names none
    becomes the user's default."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    text = request.POST.get("text", "") + ("\n" if request.POST.get("enter") == "1" else "")
    layout = request.POST.get("layout") or None
    key = request.session.session_key or ""

    def type_text() -> dict:
        control_handed_check(user=request.user, vm=vm, session_key=key)
        return vm_type(vm=vm, user=request.user, text=text, layout=layout)

    answer = _json_or_refusal(type_text)
    if answer.status_code == 200 and layout and not vm.keyboard_layout:  # the user's default
        ConsolePreference.objects.update_or_create(user=request.user, defaults={"keyboard_layout": layout})
    return answer


@login_required
@require_POST
def vm_keys_view(request: AuthenticatedRequest, vm_id: int) -> JsonResponse:
    """The console page's Keys menu: a combination pressed through libvirt (the keys the
    browser or the desktop keeps for itself: Ctrl+Alt+F2, Alt+Tab, PrintScreen, Super)."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    combination = request.POST.get("keys", "")
    key = request.session.session_key or ""

    def press() -> dict:
        control_handed_check(user=request.user, vm=vm, session_key=key)
        return vm_keys(vm=vm, user=request.user, combinations=[combination])

    return _json_or_refusal(press)


def _login_required_json(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """For a page's background requests: a 401 in JSON, not a redirect to the login page (which
    the page would load unseen, taking the login page's message with it)."""

    @functools.wraps(view)
    def check(request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": gettext("You are logged out; log in again.")}, status=401)
        return view(request, *args, **kwargs)

    return check


@_login_required_json
@never_cache
def vm_control_view(request: AuthenticatedRequest, vm_id: int) -> JsonResponse:
    """A VNC console page's view of control (asked every few seconds while it is connected):
    whether its keys reach the VM, who asks for control, whom it went to."""
    vm, _ = vm_get_for_watching(user=request.user, vm_id=vm_id)
    watching = request.GET.get("view_only") == "1" or not vm_may_use(request.user, vm)
    key = request.session.session_key or ""
    return JsonResponse(control_state(user=request.user, vm=vm, session_key=key, watching=watching))


@login_required
@require_POST
def vm_control_action(request: AuthenticatedRequest, vm_id: int, action: str) -> JsonResponse:
    """Request control (a watcher), answer a request (whoever has it), or end a hand-over
    (take it back, give it back, withdraw the request)."""
    vm, _ = vm_get_for_watching(user=request.user, vm_id=vm_id)
    key = request.session.session_key or ""

    def act() -> dict:
        if action == "request":
            handover = control_request(user=request.user, vm=vm, session_key=key)
            return {"state": handover.state}
        if action == "end":
            return {"ended": control_end(user=request.user, vm=vm, session_key=key)}
        try:
            handover_id = int(request.POST.get("request", ""))
        except ValueError:
            raise Invalid("Say which request to answer.", field="request") from None
        accept = request.POST.get("accept") == "1"
        handover = control_answer(
            user=request.user, vm=vm, session_key=key, handover_id=handover_id, accept=accept
        )
        return {"state": handover.state}

    return _json_or_refusal(act)


def _json_or_refusal(call: Callable[[], dict]) -> JsonResponse:
    try:
        return JsonResponse(call())
    except PortalError as exc:
        return JsonResponse({"error": exc.message}, status=exc.status, headers=exc.headers())


@login_required
@require_POST
def vm_migrate_view(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """Move the running VM to another host (staff): the move runs on; the page shows it."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    target = Host.objects.filter(pk=request.POST.get("host") or 0).first()
    if target is None:
        messages.error(request, gettext("Choose the host to move the VM to."))
        return redirect(vm)
    try:
        vm_migrate(vm=vm, target=target, user=request.user)
    except PortalError as exc:  # staff only: the hypervisor's words are theirs to read
        messages.error(request, gettext("Not moved: %(reason)s") % {"reason": exc})
    else:
        messages.success(
            request,
            gettext("Moving %(vm)s to %(host)s: its consoles follow by themselves.")
            % {"vm": vm.name, "host": target.name},
        )
    return redirect(vm)


@login_required
@never_cache
def vm_migration_state(request: AuthenticatedRequest, vm_id: int) -> JsonResponse:
    """The VM's latest move, for its page: state, percent, memory left to move, where to."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    migration = vm.live_migrations.select_related("source", "target").first()
    if migration is None:
        return JsonResponse({"state": None})
    return JsonResponse(live_migration_payload(migration))


ACTIONS = {
    "start": (vm_start, gettext_noop("%(vm)s is starting with a %(result)s console.")),
    "shutdown": (vm_shutdown, gettext_noop("%(vm)s was asked to shut down.")),
    "poweroff": (vm_poweroff, gettext_noop("%(vm)s was powered off.")),
    "reboot": (vm_reboot, gettext_noop("%(vm)s was restarted with a %(result)s console.")),
}
ACTION_WORDS = {
    "start": gettext_noop("Could not start %(vm)s"),
    "shutdown": gettext_noop("Could not shut down %(vm)s"),
    "poweroff": gettext_noop("Could not power off %(vm)s"),
    "reboot": gettext_noop("Could not reboot %(vm)s"),
}


@login_required
@require_POST
def vm_action(request: AuthenticatedRequest, vm_id: str, action: str) -> HttpResponse:
    vm = vm_get_for_user(user=request.user, vm_id=int(vm_id))
    run, done = ACTIONS[action]
    try:
        result = run(vm=vm, user=request.user)
    except VmStateConflict as exc:
        messages.warning(request, str(exc))
    except HypervisorUnavailable:
        raise
    except (HypervisorError, ValueError) as exc:
        logger.warning("%s of %s failed: %s", action, vm.name, exc)
        # libvirt's words can quote paths and configuration on the host: staff only.
        detail = f": {exc}" if request.user.is_staff else gettext("; an administrator can see why in the log")
        messages.error(request, gettext(ACTION_WORDS[action]) % {"vm": vm.name} + f"{detail}.")
    else:
        messages.success(request, gettext(done) % {"vm": vm.name, "result": (result or "").upper()})
    if request.POST.get("next") == "list":
        return redirect("console:vm-list")
    if request.POST.get("next") == "console" and action == "start":
        return redirect("console:vm-console", vm.id)
    return redirect(vm)


def _ticket_payload(vm: VirtualMachine, issued: IssuedTicket) -> dict:
    """What a console page needs to connect: where, with which token, until when. No password:
    the portal's proxy authenticates to the VM itself."""
    return {
        "protocol": issued.protocol,
        "token": issued.token,
        "expires": issued.expires_at.isoformat(),
        "wsPath": reverse("console-ws", args=[vm.id]),
        "proxyUrl": settings.CONSOLE_PROXY_URL if issued.ticket.kind == ConsoleTicket.Kind.WEBSOCKIFY else "",
        "viewOnly": issued.ticket.view_only,
        "clipboard": config_value(CLIPBOARD),
        # The page warns a minute before the portal ends an idle console (0: no idle limit).
        "idleTimeoutSeconds": config_int(IDLE_TIMEOUT) * 60 if issued.ticket.kind in IDLE_KINDS else 0,
        "recorded": recording_policy(vm).record,
    }


@login_required
@never_cache
def vm_console(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """The console page. Its ticket is asked for by the page itself as it loads, so issuing it
    (a libvirt round trip) runs while the browser fetches the client. `?view_only=1`
    opens it to watch only; a user the console is shared with always watches only."""
    vm, must_watch = vm_get_for_watching(user=request.user, vm_id=vm_id)
    step_up_check(request, request.get_full_path())
    view_only = must_watch or request.GET.get("view_only") == "1"
    try:
        endpoint, live_xml = console_endpoint(vm)
    except ConsoleUnavailable as exc:
        context = {"vm": vm, "unavailable": str(exc), "status": vm_status(vm)}
        return render(request, "console/console_unavailable.html", context, status=409)
    # "Resize VM to window": VNC asks QEMU, which a virtio-gpu display follows; SPICE asks the
    # guest's agent, which the page learns of once connected (spice-console.js).
    if endpoint.type == "vnc":
        fit_available = resizable_screen(live_xml)
        fit_why_not = gettext(
            "This VM's display cannot follow the window: an administrator can give it the virtio "
            "video model (for guests with a virtio-gpu driver, such as Linux). Scale to window instead."
        )
    else:
        fit_available = False
        fit_why_not = gettext(
            "The SPICE agent (spice-vdagent) is not running in the guest, so its screen cannot "
            "follow the window. Scale to window instead."
        )
    # The client bundled with its imports at set-up (bin/setup): one file, not 30 to 55 modules.
    client = "bundles/spice-console.js" if endpoint.type == "spice" else "bundles/vnc-console.js"
    preference = ConsolePreference.objects.filter(user=request.user).first()
    context = {
        "vm": vm,
        "protocol": endpoint.type,
        "client_script": client,
        # The first sockets open while the client loads: VNC's one, SPICE's main and display
        # channels' (spice-html5 opens them one after the other; the rest later, as it needs).
        "early_sockets": 1 if endpoint.type == "vnc" else 2,
        "ticket_url": reverse("console:vm-console-ticket", args=[vm.id])
        + ("?view_only=1" if view_only else ""),
        "state_url": reverse("console:vm-state", args=[vm.id]),
        "vv_fullscreen": preference.vv_fullscreen if preference else False,
        "view_only": view_only,
        "may_operate": not must_watch,
        "layouts": LAYOUT_CHOICES,
        "key_menu": KEY_MENU,
        "sticky_modifiers": STICKY_MODIFIERS,
        "layout": vm_layout(vm, request.user),
        "ends": end_table(),
        "recording": recording_policy(vm),
        "fit_available": fit_available,
        "fit_why_not": fit_why_not,
    }
    template = "console/console_spice.html" if endpoint.type == "spice" else "console/console_vnc.html"
    return render(request, template, context)


@login_required
@require_POST
def vm_console_ticket(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """A ticket for the console page (JSON): when it loads, and again for Reconnect."""
    vm, must_watch = vm_get_for_watching(user=request.user, vm_id=vm_id)
    request.json_errors = True  # type: ignore[attr-defined]  # read by PortalErrorMiddleware
    step_up_check(request, reverse("console:vm-console", args=[vm.id]))
    view_only = must_watch or request.GET.get("view_only") == "1"
    # websockify runs the same gate as the portal's own WebSocket (watchers' filters included).
    kind = ConsoleTicket.Kind.WEBSOCKIFY if settings.CONSOLE_PROXY_URL else ConsoleTicket.Kind.BROWSER
    return _ticket_response(
        request,
        vm,
        lambda: console_ticket_issue(
            user=request.user,
            vm=vm,
            kind=kind,
            origin=request_origin(request),
            session_key=request.session.session_key or "",
            view_only=view_only,
        ),
    )


def _ticket_response(
    request: AuthenticatedRequest,
    vm: VirtualMachine,
    issue: Callable[[], IssuedTicket],
    ws_path: str | None = None,
) -> JsonResponse:
    """Issue a ticket and answer with what a page needs to connect (why not: the errors'
    handler answers, in JSON)."""
    request.json_errors = True  # type: ignore[attr-defined]  # read by PortalErrorMiddleware
    issued = issue()
    payload = _ticket_payload(vm, issued)
    if ws_path is not None:
        payload.update(wsPath=ws_path, proxyUrl="")  # the portal's own WebSocket, never websockify
    response = JsonResponse(payload)
    add_never_cache_headers(response)
    return response


@login_required
@never_cache
def vm_serial(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """The serial console page (xterm.js). Its ticket is asked for by the page as it loads."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    step_up_check(request, request.get_full_path())
    status = vm_status(vm)
    if not status.is_active:
        context = {
            "vm": vm,
            "unavailable": f"{vm.name} is {status.state}; start it to open its serial console.",
            "status": status,
        }
        return render(request, "console/console_unavailable.html", context, status=409)
    # xterm.js sizes its rows with <style> elements it creates: allowed by a nonce of this
    # response only, which the page hands to them (see static/console/serial-console.js).
    nonce = secrets.token_urlsafe(18)
    context = {
        "vm": vm,
        "style_nonce": nonce,
        "ticket_url": reverse("console:vm-serial-ticket", args=[vm.id]),
        "state_url": reverse("console:vm-state", args=[vm.id]),
        "may_take_over": request.user.is_staff,
        "ends": end_table(),
        "recording": recording_policy(vm),
    }
    response = render(request, "console/serial.html", context)
    response["Content-Security-Policy"] = content_security_policy(style_nonce=nonce)
    return response


@login_required
@require_POST
def vm_serial_ticket(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """A ticket for the serial console page (JSON): when it loads, and again for Reconnect."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    request.json_errors = True  # type: ignore[attr-defined]  # read by PortalErrorMiddleware
    step_up_check(request, reverse("console:vm-serial", args=[vm.id]))
    return _ticket_response(
        request,
        vm,
        lambda: serial_ticket_issue(
            user=request.user,
            vm=vm,
            origin=request_origin(request),
            session_key=request.session.session_key or "",
        ),
        ws_path=reverse("serial-ws", args=[vm.id]),
    )


@login_required
def vm_state(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """The VM's state (JSON), for the console page to explain a disconnect."""
    vm, _ = vm_get_for_watching(user=request.user, vm_id=vm_id)
    try:
        state = vm_status(vm).state
    except HypervisorUnavailable as exc:
        detail = f": {exc}" if request.user.is_staff else ""
        return JsonResponse(
            {"state": "unknown", "error": f"host {vm.host.name} does not answer{detail}"}, status=503
        )
    return JsonResponse({"state": state})


@login_required
@never_cache
def api_tokens(request: AuthenticatedRequest) -> HttpResponse:
    """The user's API tokens: make one (shown once), see when each was last used, revoke."""
    context: dict = {}
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            if api_token_revoke(user=request.user, token_id=int(request.POST.get("token") or 0)):
                messages.success(
                    request, gettext("The token was revoked; requests with it are refused from now on.")
                )
            return redirect("console:api-tokens")
        name = request.POST.get("name", "").strip()
        try:
            days = int(request.POST.get("days", "90"))
        except ValueError:
            days = -1
        if not name or days not in (0, 30, 90, 365):
            context["form_error"] = gettext("Give the token a name, and an expiry from the list.")
        else:
            expires = timezone.now() + timedelta(days=days) if days else None
            context["new_token"], context["new_token_value"] = api_token_create(
                user=request.user, name=name, expires_at=expires
            )
    context["tokens"] = request.user.api_tokens.all()
    return render(request, "console/api_tokens.html", context, status=400 if "form_error" in context else 200)


@login_required
@require_POST
def vm_share(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """The owner (staff, an admin of the VM) shares the VM's console with another user, to
    watch read-only or to use as an operator, for a time."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    if not vm_may_administer(request.user, vm):
        messages.error(request, gettext("Only the VM's owner, its admins and staff share its console."))
        return redirect(vm)
    try:
        share = console_share_create(
            vm=vm,
            username=request.POST.get("username", ""),
            by=request.user,
            role=request.POST.get("role", ConsoleShare.Role.VIEWER),
            hours=_whole(request.POST.get("hours"), SHARE_HOURS_DEFAULT),
        )
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        words = (
            gettext("%(user)s may now use %(vm)s's console until %(until)s.")
            if share.role == ConsoleShare.Role.OPERATOR
            else gettext("%(user)s may now watch (read-only) %(vm)s's console until %(until)s.")
        )
        until = date_format(timezone.localtime(share.expires_at), "SHORT_DATETIME_FORMAT")
        messages.success(
            request, words % {"user": share.viewer.get_username(), "vm": vm.name, "until": until}
        )
    return redirect(vm)


def _whole(raw: str | None, default: int) -> int:
    """A form's whole number (a value not offered is refused by what takes it)."""
    try:
        return int(raw) if raw else default
    except ValueError:
        return -1


@login_required
@require_POST
def vm_share_end(request: AuthenticatedRequest, vm_id: int, share_id: int) -> HttpResponse:
    """Stop sharing: the viewer's open consoles end at their next check (4023)."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    if console_share_end(vm=vm, share_id=share_id):
        messages.success(request, gettext("Sharing stopped; the viewer's console closes within seconds."))
    return redirect(vm)


@login_required
def vm_thumbnail_png(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """A small picture of the running VM's screen, for the VM list (same access check)."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    try:
        png = vm_thumbnail(vm)
    except (DomainNotRunning, DomainNotFound):
        return HttpResponse(f"{vm.name} is not running.\n", status=409, content_type="text/plain")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=5"
    return response


@login_required
def live_consoles(request: AuthenticatedRequest) -> HttpResponse:
    """Staff: every open console session, live (the page polls the API)."""
    if not request.user.is_staff:
        raise Http404("No such page.")
    return render(request, "console/live_consoles.html")


def console_ws_http(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """The console proxy speaks WebSocket only."""
    return HttpResponse("This is a WebSocket endpoint.\n", status=426, content_type="text/plain")


@login_required
@require_POST
def vm_console_vv(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """A .vv file that opens the running VM's console in virt-viewer."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    step_up_check(request, vm.get_absolute_url())
    preference, _ = ConsolePreference.objects.get_or_create(user=request.user)
    if request.POST.get("preferences") == "1":  # the form's checkbox, remembered for next time
        preference.vv_fullscreen = request.POST.get("fullscreen") == "1"
        preference.save(update_fields=["vv_fullscreen"])
    try:
        download = vv_file_issue(
            user=request.user,
            vm=vm,
            fullscreen=preference.vv_fullscreen,
            session_key=request.session.session_key or "",
            client_address=client_ip(request.META.get("REMOTE_ADDR")),
        )
    except ConsoleUnavailable as exc:
        messages.error(request, exc.message)
        return redirect(vm)
    except RateLimited as exc:
        response = render(request, "console/rate_limited.html", {"vm": vm, "message": str(exc)}, status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    return vv_response(download)


def vv_response(download: VvDownload) -> HttpResponse:
    """A .vv file as a download (pages and API alike)."""
    response = HttpResponse(download.text, content_type="application/x-virt-viewer")
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    add_never_cache_headers(response)
    return response


# -- recordings ----------------------------------------------------------------------------------


def _recording_for(request: AuthenticatedRequest, recording_id: int) -> ConsoleRecording:
    recording = (
        ConsoleRecording.objects.select_related("session", "vm", "user").filter(pk=recording_id).first()
    )
    if recording is None or not recording_may_play(user=request.user, recording=recording):
        raise Http404("No such recording.")
    return recording


@login_required
def recordings(request: AuthenticatedRequest) -> HttpResponse:
    """Recorded console sessions: everyone's for staff; a user's own, and their VMs' as their
    admin, when the policy lets them."""
    if not request.user.is_staff and config_value(RECORDING_PLAYBACK) == "staff":
        raise Http404("No such page.")
    rows = recordings_playable_by(request.user).select_related("session", "vm", "user")
    return render(request, "console/recordings.html", {"recordings": rows[:200]})


@login_required
@never_cache
def recording_player(request: AuthenticatedRequest, recording_id: int) -> HttpResponse:
    """Play a recording back in the browser: noVNC's decoder for VNC, spice-html5 fed by the
    replay endpoint for SPICE (console/proxy/replay.py), xterm.js for the serial console."""
    recording = _recording_for(request, recording_id)
    templates: dict[str, str] = {
        ConsoleProtocol.VNC: "console/recording_vnc.html",
        ConsoleProtocol.SPICE: "console/recording_spice.html",
        ConsoleProtocol.SERIAL: "console/recording_serial.html",
    }
    nonce = secrets.token_urlsafe(18)
    ended = recording.ended_at or timezone.now()
    duration_ms = max(0, int((ended - recording.started_at).total_seconds() * 1000))
    context = {
        "recording": recording,
        "style_nonce": nonce,
        "data_url": reverse("console:recording-data", args=[recording.pk]),
        "socket_path": f"/ws/recording/{recording.pk}/spice/",
        "duration_ms": duration_ms,
        "duration_clock": f"{duration_ms // 60000}:{duration_ms // 1000 % 60:02d}",
    }
    template = templates[recording.protocol]
    response = render(request, template, context)
    if recording.protocol == ConsoleProtocol.SERIAL:  # xterm.js styles its rows by <style>
        response["Content-Security-Policy"] = content_security_policy(style_nonce=nonce)
    return response


@login_required
@never_cache
def recording_data(request: AuthenticatedRequest, recording_id: int) -> HttpResponseBase:
    """The recording's file, for its player or as a download; each fetch is audited."""
    recording = _recording_for(request, recording_id)
    try:
        path = recording_file(recording)
        handle = path.open("rb")
    except (OSError, ValueError):
        raise Http404("The recording's file is gone (retention, or the directory moved).") from None
    recording_played(
        recording=recording, user=request.user, via="download" if "download" in request.GET else "page"
    )
    response = FileResponse(handle, content_type="application/octet-stream")
    if "download" in request.GET:
        response["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return response


SERIAL_LOG_MAX = 1 << 20  # bytes of a serial log a page shows or a download carries
_TERMINAL_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[78=>]|\][^\x07]*\x07)")


@login_required
@never_cache
def vm_serial_log_view(request: AuthenticatedRequest, vm_id: int) -> HttpResponse:
    """What the VM's guest printed on its serial port, boot messages included, across reboots
    and reconnects (virtlogd's log): a page with a filter, `?format=text` as it was written (the
    serial console page shows its end before connecting), `?download=1` as a file."""
    vm = vm_get_for_user(user=request.user, vm_id=vm_id)
    try:
        wanted = int(request.GET.get("tail", SERIAL_LOG_MAX))
    except ValueError:
        wanted = SERIAL_LOG_MAX
    data = vm_serial_log(vm=vm, max_bytes=max(1, min(wanted, SERIAL_LOG_MAX)))
    if request.GET.get("format") == "text" or "download" in request.GET:
        response = HttpResponse(data, content_type="text/plain; charset=utf-8")
        if "download" in request.GET:
            response["Content-Disposition"] = f'attachment; filename="{vm.name}-serial.log"'
        return response
    text = _TERMINAL_ESCAPES.sub("", data.decode(errors="replace")).replace("\r\n", "\n")
    return render(request, "console/serial_log.html", {"vm": vm, "log": text, "size": len(data)})
