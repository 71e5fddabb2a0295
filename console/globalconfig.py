"""The registry of global configuration definitions, and reading and changing their values.

Modelled on the cloud platform's global settings: each definition has a category, a name,
a type, a default and, where it makes sense, the values it accepts. Values live in the
database (`GlobalConfigValue`); a missing or empty value means the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import transaction

if TYPE_CHECKING:
    from console.auth import User

CONSOLE_MODE = "kvm.consoleMode"


@dataclass(frozen=True)
class ConfigDefinition:
    """One global setting, as the code knows it."""

    category: str
    name: str
    type: str  # "string", "integer" or "boolean"
    default: str
    description: str
    valid_values: tuple[str, ...] = ()
    minimum: int | None = None

    @property
    def key(self) -> str:
        return f"{self.category}.{self.name}"

    def clean(self, raw: str) -> str:
        """The value in canonical form, or a ValidationError that names what is accepted."""
        value = str(raw).strip()
        if self.type == "integer":
            try:
                value = str(int(value))
            except ValueError:
                raise ValidationError(f"{self.key} must be a whole number, not {raw!r}.") from None
            if self.minimum is not None and int(value) < self.minimum:
                raise ValidationError(f"{self.key} must be {self.minimum} or more, not {raw!r}.")
        elif self.type == "boolean":
            if value.lower() not in {"true", "false"}:
                raise ValidationError(f"{self.key} must be true or false, not {raw!r}.")
            value = value.lower()
        if self.valid_values and value not in self.valid_values:
            raise ValidationError(
                f"{raw!r} is not a valid value for {self.key}; "
                f"valid values are: {', '.join(self.valid_values)}."
            )
        return value


DEFINITIONS: dict[str, ConfigDefinition] = {
    definition.key: definition
    for definition in [
        ConfigDefinition(
            category="kvm",
            name="consoleMode",
            type="string",
            default="vnc",
            valid_values=("vnc", "spice"),
            description=(
                "The console transport protocol of KVM virtual machines: vnc or spice. "
                "spice enables SPICE connections to VMs. A running VM keeps the protocol it "
                "was started with until it is restarted."
            ),
        ),
        ConfigDefinition(
            category="console",
            name="idleTimeoutMinutes",
            type="integer",
            default="60",
            minimum=0,
            description=(
                "A browser console (graphical or serial) with no key press or mouse move for this "
                "many minutes is ended; its page warns a minute before. 0: no limit."
            ),
        ),
        ConfigDefinition(
            category="console",
            name="maxSessionMinutes",
            type="integer",
            default="720",
            minimum=0,
            description=(
                "A console connection is ended this many minutes after it was opened, on every "
                "path (browser, websockify, SPICE proxy, serial). 0: no limit."
            ),
        ),
        ConfigDefinition(
            category="console",
            name="maxSessionsPerUser",
            type="integer",
            default="10",
            minimum=0,
            description=(
                "Consoles one user may hold open at once (the channels of one SPICE console count "
                "once); more are refused. 0: no limit."
            ),
        ),
        ConfigDefinition(
            category="console",
            name="clipboard",
            type="string",
            default="both",
            valid_values=("both", "to-vm", "from-vm", "off"),
            description=(
                "Which way the clipboard may go between users and VMs: both, to-vm, from-vm or "
                "off. Enforced in the VM (its XML: SPICE and QEMU's clipboard agent have one "
                "switch for both ways, so anything but 'both' turns SPICE's off, and 'to-vm' "
                "turns VNC's off) and by the portal's proxy (it drops a VNC client's clipboard "
                "unless to-vm is allowed). Applies to VMs started after the change."
            ),
        ),
        ConfigDefinition(
            category="console",
            name="recording",
            type="string",
            default="off",
            valid_values=("off", "all", "per-vm"),
            description=(
                "Which consoles are recorded: off, all, or per-vm (those of VMs whose own 'record "
                "console' switch is on). A recorded console says so on its page before it "
                "connects, and in the API's ticket."
            ),
        ),
        ConfigDefinition(
            category="console",
            name="recordingRetentionDays",
            type="integer",
            default="30",
            minimum=1,
            description="Recordings older than this many days are deleted.",
        ),
        ConfigDefinition(
            category="console",
            name="recordingMaxMiB",
            type="integer",
            default="512",
            minimum=1,
            description=("A recording stops (the console goes on) at this size, with a note in its record."),
        ),
        ConfigDefinition(
            category="console",
            name="recordKeystrokes",
            type="boolean",
            default="false",
            description=(
                "Record which keys users press (VNC key symbols, the serial console's input), not "
                "only that they pressed one. Pages say so when it is on."
            ),
        ),
        ConfigDefinition(
            category="console",
            name="recordingPlayback",
            type="string",
            default="staff",
            valid_values=("staff", "staff-and-user", "staff-and-vm-admins", "staff-vm-admins-and-user"),
            description=(
                "Who may play a recording back: staff; staff and the user whose session it is; "
                "staff and the VM's admins (its owner and those granted the admin role on it or "
                "its host); or all three. Decided by the access module, so a grant taken back "
                "ends a playback. Every playback is recorded."
            ),
        ),
        ConfigDefinition(
            category="auth",
            name="twoFactorForStaff",
            type="boolean",
            default="false",
            description=(
                "Staff must use two-factor authentication (TOTP): a staff user without it is sent "
                "to set it up before anything else, and one with it must give a code after the "
                "password. Users who set it up always give a code."
            ),
        ),
        ConfigDefinition(
            category="auth",
            name="stepUpMinutes",
            type="integer",
            default="0",
            minimum=0,
            description=(
                "Opening a console, a serial console or a .vv file asks a user who has two-factor "
                "authentication for a fresh code when their last one is older than this many "
                "minutes. 0: never (the code given at login stands)."
            ),
        ),
    ]
}
RECORDING = "console.recording"
RECORDING_RETENTION = "console.recordingRetentionDays"
RECORDING_MAX_MIB = "console.recordingMaxMiB"
RECORD_KEYSTROKES = "console.recordKeystrokes"
RECORDING_PLAYBACK = "console.recordingPlayback"
CLIPBOARD = "console.clipboard"
IDLE_TIMEOUT = "console.idleTimeoutMinutes"
MAX_SESSION = "console.maxSessionMinutes"
MAX_SESSIONS_PER_USER = "console.maxSessionsPerUser"
TWO_FACTOR_STAFF = "auth.twoFactorForStaff"
STEP_UP_MINUTES = "auth.stepUpMinutes"


def config_int(key: str) -> int:
    """An integer setting's current value."""
    return int(config_value(key))


class UnknownSetting(KeyError):
    """No definition has this key."""

    def __str__(self) -> str:
        return f"unknown setting {self.args[0]!r}; known: {', '.join(sorted(DEFINITIONS))}"


def definition_get(key: str) -> ConfigDefinition:
    """The definition for 'category.name'."""
    try:
        return DEFINITIONS[key]
    except KeyError:
        raise UnknownSetting(key) from None


def config_value(key: str) -> str:
    """The current value of a setting: the stored one, or its default."""
    from console.models import GlobalConfigValue

    definition = definition_get(key)
    stored = (
        GlobalConfigValue.objects.filter(category=definition.category, name=definition.name)
        .values_list("value", flat=True)
        .first()
    )
    return stored if stored not in (None, "") else definition.default


def config_set(*, key: str, value: str | None, actor: str, user: User | None = None) -> tuple[str, str]:
    """Validate and store a value (None resets to the default) and record the change.

    Returns (old, new) effective values.
    """
    from console.models import GlobalConfigChange, GlobalConfigValue

    definition = definition_get(key)
    cleaned = None if value is None else definition.clean(value)
    with transaction.atomic():
        row, _ = GlobalConfigValue.objects.select_for_update().get_or_create(
            category=definition.category, name=definition.name
        )
        old = row.value if row.value not in (None, "") else definition.default
        new = cleaned if cleaned is not None else definition.default
        row.value = cleaned
        row.save(update_fields=["value", "updated_at"])
        GlobalConfigChange.objects.create(
            category=definition.category,
            name=definition.name,
            old_value=old,
            new_value=new,
            changed_by=user,
            actor=actor,
        )
    return old, new


def config_reset(*, key: str, actor: str, user: User | None = None) -> tuple[str, str]:
    """Set a setting back to its default, recording the change."""
    return config_set(key=key, value=None, actor=actor, user=user)


def config_rows_sync() -> None:
    """Make sure every definition has a row (holding no value: the default applies)."""
    from console.models import GlobalConfigValue

    for definition in DEFINITIONS.values():
        GlobalConfigValue.objects.get_or_create(category=definition.category, name=definition.name)
