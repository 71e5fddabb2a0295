"""Driving a VM without opening its console: its screen as a PNG, key combinations and text
typed in the guest's keyboard layout, through libvirt (send-key, screenshot). For scripts and
test rigs (installers, login prompts) and for the console pages' "Type text".

Who may: whoever may use the VM (console.access), as for its console; the VM must be running.
Every call is audited (VmEvent: the keys pressed, for text only its length and layout, never
the text: it may be a password) and counts against AUTOMATION_ACTIONS_PER_MINUTE per user.
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext
from PIL import Image

from console.errors import Invalid, RateLimited, VmStateConflict
from console.hypervisor import DomainNotFound, DomainNotRunning, hypervisor_for
from console.keyboard import DEFAULT_LAYOUT, LAYOUTS, combination_keystroke, text_keystrokes
from console.models import ConsolePreference, VirtualMachine, VmEvent

if TYPE_CHECKING:
    from console.auth import User

ACTIONS = ("type", "keys", "screenshot")
HOLD_MS = 10  # how long each keystroke's keys are held: QEMU's default (100 ms) types 10 keys a second
MAX_TEXT = 4096  # characters per call
MAX_COMBINATIONS = 32  # per call


def vm_layout(vm: VirtualMachine, user: User) -> str:
    """The layout typed in for `user` on `vm`: the VM's, else the user's default, else US."""
    if vm.keyboard_layout:
        return vm.keyboard_layout
    preference = ConsolePreference.objects.filter(user=user).first()
    return preference.keyboard_layout if preference else DEFAULT_LAYOUT


def vm_type(*, vm: VirtualMachine, user: User, text: str, layout: str | None = None) -> dict:
    """Type `text` into the guest as its keyboard would (Enter for a newline); a character the
    layout cannot type refuses the whole text before any key is pressed."""
    layout = layout or vm_layout(vm, user)
    if layout not in LAYOUTS:
        raise Invalid(f"Unknown keyboard layout {layout!r}: use one of {', '.join(LAYOUTS)}.", field="layout")
    if not text or len(text) > MAX_TEXT:
        raise Invalid(gettext("Give 1 to %(most)s characters to type.") % {"most": MAX_TEXT}, field="text")
    strokes = text_keystrokes(text, layout)
    _rate_check(user)
    _send(vm, strokes)
    _record(vm, user, "type", f"{len(text)} characters, layout {layout}")
    return {"typed": len(text), "keystrokes": len(strokes), "layout": layout}


def vm_keys(*, vm: VirtualMachine, user: User, combinations: list[str]) -> dict:
    """Press each combination ("ctrl+alt+delete", "alt+f2", "enter") in turn."""
    if not combinations or len(combinations) > MAX_COMBINATIONS:
        raise Invalid(f"Give 1 to {MAX_COMBINATIONS} key combinations.", field="keys")
    strokes = [combination_keystroke(combination) for combination in combinations]
    _rate_check(user)
    _send(vm, strokes)
    _record(vm, user, "keys", ", ".join(c.strip().lower() for c in combinations)[:200])
    return {"pressed": len(strokes)}


def vm_screenshot(*, vm: VirtualMachine, user: User) -> bytes:
    """The VM's screen now, full size, as PNG."""
    _rate_check(user)
    try:
        shot = hypervisor_for(vm.host).screenshot(vm.name)
    except (DomainNotRunning, DomainNotFound):
        raise VmStateConflict(
            gettext("%(vm)s is not running: start it to see its screen.") % {"vm": vm.name}
        ) from None
    _record(vm, user, "screenshot")
    if shot.startswith(b"\x89PNG"):
        return shot
    out = io.BytesIO()
    Image.open(io.BytesIO(shot)).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def _send(vm: VirtualMachine, strokes: list[tuple[int, ...]]) -> None:
    try:
        hypervisor_for(vm.host).send_keys(vm.name, strokes, hold_ms=HOLD_MS)
    except (DomainNotRunning, DomainNotFound):
        raise VmStateConflict(
            gettext("%(vm)s is not running: start it, then type.") % {"vm": vm.name}
        ) from None


def _rate_check(user: User) -> None:
    limit = settings.AUTOMATION_ACTIONS_PER_MINUTE
    if limit <= 0:
        return
    now = timezone.now()
    window = timedelta(minutes=1)
    recent = VmEvent.objects.filter(user=user, action__in=ACTIONS, at__gte=now - window)
    times = list(recent.order_by("-at").values_list("at", flat=True)[:limit])
    if len(times) >= limit:
        retry_after = max(1, int((times[-1] + window - now).total_seconds()) + 1)
        raise RateLimited(
            gettext(
                "Too many screenshots, keys and texts in the last minute (%(limit)s allowed); "
                "try again in %(seconds)s s."
            )
            % {"limit": limit, "seconds": retry_after},
            retry_after,
        )


def _record(vm: VirtualMachine, user: User, action: str, detail: str = "") -> None:
    VmEvent.objects.create(vm=vm, user=user, action=action, detail=detail)
