"""Global configuration values, hypervisor hosts and virtual machines."""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from console.keyboard import DEFAULT_LAYOUT, LAYOUT_CHOICES

if TYPE_CHECKING:
    from console.auth import User
    from console.hypervisor.ssh import SshTarget


class GlobalConfigValue(models.Model):
    """The stored value of one registry definition; empty means the definition's default."""

    category = models.CharField(max_length=64)
    name = models.CharField(max_length=128)
    # NULL, not "", means "the default": an empty string may one day be a valid value.
    value = models.CharField(max_length=1024, null=True, blank=True)  # noqa: DJ001
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["category", "name"], name="unique_config_key")]
        ordering = ["category", "name"]
        verbose_name = "global setting"

    def __str__(self) -> str:
        return f"{self.category}.{self.name}"

    @property
    def key(self) -> str:
        return f"{self.category}.{self.name}"


class GlobalConfigChange(models.Model):
    """An audit record: who changed which setting, when, from what to what."""

    category = models.CharField(max_length=64)
    name = models.CharField(max_length=128)
    old_value = models.CharField(max_length=1024)
    new_value = models.CharField(max_length=1024)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor = models.CharField(max_length=150, help_text="Who or what made the change.")
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        verbose_name = "global setting change"

    def __str__(self) -> str:
        return f"{self.category}.{self.name}: {self.old_value} -> {self.new_value}"


class ConsoleMode(models.TextChoices):
    VNC = "vnc", "VNC"
    SPICE = "spice", "SPICE"


class ConsoleProtocol(models.TextChoices):
    """What a console ticket or session carries: a graphical console, or the serial console."""

    VNC = "vnc", "VNC"
    SPICE = "spice", "SPICE"
    SERIAL = "serial", "serial console"


class VideoModel(models.TextChoices):
    """The VM's display device. `virtio` (virtio-gpu) lets the guest's screen follow the size a
    viewer asks for (VNC's SetDesktopSize, SPICE's monitors configuration): Linux guests have
    its driver; others keep a fixed screen, which the page scales."""

    STANDARD = "standard", "Standard (QXL for SPICE, VGA for VNC)"
    VIRTIO = "virtio", "virtio-gpu (the guest's screen follows the window)"


class ConsoleModeChoice(models.TextChoices):
    INHERIT = "inherit", "Inherit (kvm.consoleMode)"
    VNC = "vnc", "VNC"
    SPICE = "spice", "SPICE"


# Only QEMU, locally or over libvirt's standard remote transports; the portal adds any
# parameters itself (key file, known_hosts), so a URI never carries them: a `command=` or
# `socket=` parameter would run or open whatever it names on the portal's machine.
URI_RE = re.compile(
    r"^qemu(?:\+(?P<transport>ssh|libssh|tls))?://"
    r"(?P<authority>(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?)?"
    r"/(?:system|session)$"
)


def validate_libvirt_uri(value: str) -> None:
    match = URI_RE.match(value)
    if not match or bool(match["transport"]) != bool(match["authority"]):
        raise ValidationError(
            f"{value!r} is not a supported libvirt URI. Use qemu:///system for this machine, or "
            "qemu+ssh://user@host/system, qemu+libssh://user@host/system or "
            "qemu+tls://host/system for another, without parameters."
        )


def listen_address_is_unspecified(value: str) -> bool:
    """0.0.0.0, ::, or any spelling of them (::ffff:0.0.0.0, 0::0): every interface."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_unspecified


def validate_client_address(value: str) -> None:
    """A host name or IP address, nothing that could carry a port, path or newline."""
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not re.fullmatch(
        r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*",
        value,
    ):
        raise ValidationError(f"{value!r} is not a host name or IP address.")


class Host(models.Model):
    """A hypervisor reached through libvirt."""

    name = models.SlugField(max_length=64, unique=True)
    uri = models.CharField("libvirt URI", max_length=255, validators=[validate_libvirt_uri], unique=True)
    console_listen_address = models.GenericIPAddressField(
        default="127.0.0.1",
        help_text="The address VM consoles listen on, on the host. Loopback unless clients "
        "must reach the host directly.",
    )
    listen_on_all_interfaces = models.BooleanField(
        default=False,
        help_text="Required to let consoles listen on 0.0.0.0 or ::, i.e. every interface.",
    )
    console_client_address = models.CharField(
        max_length=253,
        default="127.0.0.1",
        validators=[validate_client_address],
        help_text="The host name or address a client (the portal's proxy, virt-viewer) uses "
        "to reach consoles on this host.",
    )

    ssh_key_file = models.CharField(
        "SSH key file",
        max_length=1024,
        blank=True,
        help_text="Private key the portal logs in with (qemu+ssh hosts); empty for SSH_KEY_FILE.",
    )
    ssh_host_key = models.TextField(
        "SSH host key",
        blank=True,
        help_text="The host's public key, e.g. the contents of /etc/ssh/ssh_host_ed25519_key.pub on "
        "it. The portal refuses a host whose key differs; it never accepts one by itself.",
    )

    spice_ca_cert = models.TextField(
        "SPICE CA certificate",
        blank=True,
        help_text="PEM of the CA that signed the host's SPICE TLS certificate. When set and a "
        "VM has a TLS port, .vv files tell virt-viewer to use TLS and trust this CA.",
    )
    spice_host_subject = models.CharField(
        "SPICE certificate subject",
        max_length=255,
        blank=True,
        help_text='The subject of the host\'s SPICE certificate, e.g. "C=US,O=Example,CN=host1".',
    )
    migration_address = models.GenericIPAddressField(
        null=True,
        blank=True,
        help_text="The host's own address on the network between hosts: VMs live-migrate to "
        "this host through it (its QEMU listens there, and only there, for the incoming VM). "
        "Empty: VMs cannot be moved here.",
    )
    maintenance = models.BooleanField(
        default=False,
        help_text="In maintenance: no VM starts or moves here. Set by the admin action, which "
        "also moves the host's running VMs away.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if listen_address_is_unspecified(self.console_listen_address) and not self.listen_on_all_interfaces:
            raise ValidationError(
                {
                    "console_listen_address": "Listening on every interface exposes consoles "
                    "to the network; tick 'listen on all interfaces' to confirm."
                }
            )


libvirt_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$",
    "Use 1-63 letters, digits and _ . + -, starting with a letter or digit.",
)


def validate_host_path(value: str) -> None:
    """An absolute path of a file on the host: no '..', nothing XML cannot carry."""
    if not value.startswith("/") or any(c < " " for c in value) or "/../" in f"{value}/":
        raise ValidationError("Give an absolute path of a file on the host, without '..'.")


validate_disk_image = validate_host_path  # the name migration 0001 refers to


def validate_kernel_cmdline(value: str) -> None:
    if any(c < " " or c == "\x7f" for c in value):
        raise ValidationError("The kernel command line is one line of printable characters.")


class VirtualMachineQuerySet(models.QuerySet):
    def visible_to(self, user: User) -> VirtualMachineQuerySet:
        """The VMs a user may see and operate: their own, those an operator or admin grant gives
        them (on the VM or its host, to them or a group of theirs) or an operator share in its
        time box, or all of them for staff."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_staff:
            return self
        operate = VmGrant.objects.filter(
            Q(user=user) | Q(group__in=user.groups.all()),
            role__in=[VmGrant.Role.OPERATOR, VmGrant.Role.ADMIN],
        )
        shared = ConsoleShare.objects.live().filter(viewer=user, role=ConsoleShare.Role.OPERATOR)
        return self.filter(
            Q(owner=user)
            | Q(pk__in=operate.values("vm_id"))
            | Q(host_id__in=operate.values("host_id"))
            | Q(pk__in=shared.values("vm_id"))
        )


class VirtualMachine(models.Model):
    """A VM: the libvirt domain of the same name on its host."""

    name = models.CharField(max_length=63, validators=[libvirt_name_validator])
    uuid = models.UUIDField("UUID", default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    host = models.ForeignKey(Host, on_delete=models.PROTECT)
    description = models.TextField(blank=True)
    vcpus = models.PositiveSmallIntegerField(
        "vCPUs", default=1, validators=[MinValueValidator(1), MaxValueValidator(64)]
    )
    memory_mib = models.PositiveIntegerField(
        "memory (MiB)", default=64, validators=[MinValueValidator(16), MaxValueValidator(1 << 20)]
    )
    disk_image = models.CharField(
        max_length=1024,
        blank=True,
        validators=[validate_disk_image],
        help_text="Absolute path of a qcow2 image on the host; empty for a disk-less VM.",
    )
    boot_menu = models.BooleanField(
        default=False, help_text="Show the firmware's boot menu prompt for 30 s at start."
    )
    kernel = models.CharField(
        max_length=1024,
        blank=True,
        validators=[validate_host_path],
        help_text="Absolute path of a kernel on the host, to boot it directly (no firmware, no "
        "boot menu); empty to boot the disk image.",
    )
    initrd = models.CharField(
        max_length=1024, blank=True, validators=[validate_host_path], help_text="Its initramfs, if any."
    )
    kernel_cmdline = models.CharField(
        "kernel command line",
        max_length=512,
        blank=True,
        validators=[validate_kernel_cmdline],
        help_text="For a serial console, include console=ttyS0 (e.g. 'console=tty0 console=ttyS0').",
    )
    serial_console = models.BooleanField(
        default=True,
        help_text="Give the VM a serial port that users can open in the browser (the serial console).",
    )
    record_console = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Record this VM's consoles when console.recording is per-vm.",
    )
    keyboard_layout = models.CharField(
        max_length=8,
        choices=LAYOUT_CHOICES,
        blank=True,
        default="",
        help_text="The keyboard layout the guest's OS uses: what 'Type text' and the API's "
        "type/ press for each character. Empty: each user's default (US if none).",
    )
    console_mode = models.CharField(
        max_length=8, choices=ConsoleModeChoice.choices, default=ConsoleModeChoice.INHERIT
    )
    video = models.CharField(
        "video model",
        max_length=8,
        choices=VideoModel.choices,
        default=VideoModel.STANDARD,
        db_default=VideoModel.STANDARD,
        help_text="virtio-gpu: 'Resize the VM to the window' works on guests with its driver "
        "(Linux; the demo guest's desktop kernel, var/guest/vmlinuz-desktop). Takes effect at the "
        "next start.",
    )
    started_mode = models.CharField(
        max_length=8,
        choices=ConsoleMode.choices,
        blank=True,
        editable=False,
        help_text="The console mode the VM was last started with.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = VirtualMachineQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="unique_vm_name_per_host")]
        ordering = ["name", "id"]
        verbose_name = "virtual machine"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("console:vm-detail", args=[self.pk])

    def clean(self) -> None:
        if (self.initrd or self.kernel_cmdline) and not self.kernel:
            raise ValidationError({"kernel": "An initramfs or a command line needs a kernel to boot."})

    def usable_by(self, user: User) -> bool:
        """The row-level form of `VirtualMachineQuerySet.visible_to`: owner or staff, active."""
        if not user.is_authenticated or not user.is_active:
            return False
        return user.is_staff or self.owner_id == user.pk

    def effective_console_mode(self, global_mode: str) -> str:
        """The mode a start would use now: the VM's override, or `global_mode` (kvm.consoleMode,
        which the caller reads once for however many VMs)."""
        if self.console_mode != ConsoleModeChoice.INHERIT:
            return self.console_mode
        return global_mode


class VmEvent(models.Model):
    """An audit record of an action on a VM: who did what, when."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=32)
    detail = models.CharField(max_length=255, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "VM event"

    def __str__(self) -> str:
        return f"{self.vm} {self.action}"


class ConsoleTicket(models.Model):
    """Admission to one VM's console for one user, for a short time and a few connections.

    Only a hash of the token is stored; the endpoint is the one read from the VM's live XML
    when the ticket was issued, so a connection never goes anywhere a client chose.
    """

    class Kind(models.TextChoices):
        """The one path a ticket admits connections on: a ticket handed to a page is no bearer
        token for the other proxies."""

        BROWSER = "browser", "browser console (the portal's WebSocket proxy)"
        WEBSOCKIFY = "websockify", "browser console through websockify"
        VV = "vv", "virt-viewer file (the SPICE proxy)"
        SERIAL = "serial", "serial console (the portal's WebSocket, libvirt's console stream)"
        API = "api", "console through the API: the portal's WebSocket, admitted by the ticket alone"

    # Not stored: set at admission to how a proxy reaches the console (None: directly).
    ssh: SshTarget | None = None

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.BROWSER)
    protocol = models.CharField(max_length=8, choices=ConsoleProtocol.choices)
    address = models.CharField(max_length=253)
    port = models.PositiveIntegerField()
    tls_port = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    max_connections = models.PositiveSmallIntegerField()
    connections = models.PositiveSmallIntegerField(default=0)
    # What the right to this console rests on, checked at admission and while it stays open.
    origin = models.CharField(
        max_length=255,
        blank=True,
        help_text="The page origin that asked for it; WebSockets must come from it.",
    )
    session_key = models.CharField(
        max_length=40, blank=True, help_text="The login session that asked for it; logging out ends it."
    )
    auth_hash = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the user's session hash: a new password ends it."
    )
    domain_id = models.IntegerField(
        null=True, help_text="The libvirt ID of the running domain: a restarted VM gets another."
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=64, blank=True)
    last_input_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The user's last key press or mouse move, as last recorded (idle limit).",
    )
    view_only = models.BooleanField(
        default=False, help_text="Watch only: the proxy drops the client's keys, mouse and clipboard."
    )
    # New columns get a database default: workers of the previous version, still running while
    # a deployment migrates, insert rows without them.
    client_secret_hash = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="SHA-256 of the one-time password a .vv file through the SPICE proxy carries.",
    )
    api_token = models.ForeignKey(
        "ApiToken",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="The API token it was issued with: revoking the token ends its consoles.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"], name="ticket_user_created")]

    def __str__(self) -> str:
        return f"{self.kind} ticket for {self.vm} ({self.user})"


class ConsoleSession(models.Model):
    """One relayed console connection (or one .vv download): who, what, from where, how much."""

    class Via(models.TextChoices):
        CHANNELS = "channels", "portal WebSocket proxy"
        WEBSOCKIFY = "websockify", "websockify proxy"
        SPICE_PROXY = "spiceproxy", "SPICE HTTP proxy"
        VV = "vv", ".vv download"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    vm = models.ForeignKey(VirtualMachine, null=True, on_delete=models.SET_NULL)
    ticket = models.ForeignKey(ConsoleTicket, null=True, blank=True, on_delete=models.SET_NULL)
    via = models.CharField(max_length=16, choices=Via.choices)
    protocol = models.CharField(max_length=8, choices=ConsoleProtocol.choices)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    bytes_to_client = models.BigIntegerField(default=0)
    bytes_from_client = models.BigIntegerField(default=0)
    end_reason = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=128, blank=True, help_text="host:pid of the process relaying it.")
    seen_at = models.DateTimeField(
        null=True, blank=True, help_text="Last heartbeat of the relaying process, every few seconds."
    )
    end_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When an administrator asked to end it (it ends at the next check)."
    )
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The administrator who ended it.",
    )
    established_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the console answered and its handshake completed (serial: when it was opened).",
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["user", "ended_at"], name="session_user_open")]

    def __str__(self) -> str:
        return f"{self.via} {self.protocol} session on {self.vm} by {self.user}"


class ConsolePreference(models.Model):
    """A user's console preferences."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    vv_fullscreen = models.BooleanField("open virt-viewer fullscreen", default=False)
    keyboard_layout = models.CharField(
        max_length=8,
        choices=LAYOUT_CHOICES,
        default=DEFAULT_LAYOUT,
        help_text="The layout typed in for VMs that do not name one.",
    )

    def __str__(self) -> str:
        return f"console preferences of {self.user}"


class ApiToken(models.Model):
    """A user's token for the REST API: shown once when made, stored as its SHA-256 only."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64, help_text="What it is for, e.g. 'backup script'.")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="The token's first characters, to recognise it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: until revoked.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user}"


class ConsoleShareQuerySet(models.QuerySet):
    def live(self) -> ConsoleShareQuerySet:
        """Shares in force now: not ended, not past their time box."""
        return self.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()), ended_at__isnull=True
        )


class ConsoleShare(models.Model):
    """A VM's console shared with another user for a time box: to watch it (viewer), or to use
    it as an operator does (console with keys, serial console, .vv, power), until it expires or
    its owner ends it."""

    class Role(models.TextChoices):
        VIEWER = "viewer", _("viewer (watch the console)")
        OPERATOR = "operator", _("operator (console, serial, .vv, power)")

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="shares")
    viewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_shares"
    )
    shared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="The end of its time box.")
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = ConsoleShareQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["vm", "viewer"],
                condition=models.Q(ended_at__isnull=True),
                name="one_open_share_per_viewer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.vm} shared with {self.viewer}"


class GraphicsSecret(models.Model):
    """The running VM's graphics password, which only the portal's proxies use (they
    authenticate to QEMU themselves; no browser ever holds it). Stored encrypted with a key
    derived from SECRET_KEY; rotated when its validity runs low, when the VM restarted
    (another domain instance) or after a .vv file that names the host directly carried it."""

    vm = models.OneToOneField(
        VirtualMachine, on_delete=models.CASCADE, primary_key=True, related_name="graphics_secret"
    )
    domain_id = models.IntegerField(null=True, help_text="The domain instance it was set on.")
    password = models.CharField(max_length=255, blank=True, help_text="Encrypted (Fernet).")
    valid_until = models.DateTimeField(null=True)
    rotated_at = models.DateTimeField(null=True)
    rotations = models.PositiveIntegerField(default=0)
    locked_at = models.DateTimeField(null=True, help_text="Last taken to rotate it (serializes rotations).")

    def __str__(self) -> str:
        return f"graphics password of {self.vm}"


class ConsoleRecording(models.Model):
    """One console session's recording: a file under RECORDINGS_DIR, written append-only while
    the session lasts (a worker killed mid-session leaves what it wrote, playable)."""

    class Format(models.TextChoices):
        STREAM = "stream", "what the client received, timed (VNC, a SPICE channel)"
        ASCIICAST = "asciicast", "asciicast v2 (the serial console)"

    session = models.OneToOneField(ConsoleSession, on_delete=models.CASCADE, related_name="recording")
    vm = models.ForeignKey(VirtualMachine, null=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    protocol = models.CharField(max_length=8, choices=ConsoleProtocol.choices)
    channel = models.CharField(max_length=16, blank=True, help_text="SPICE: which channel.")
    format = models.CharField(max_length=16, choices=Format.choices)
    path = models.CharField(max_length=1024, help_text="Relative to RECORDINGS_DIR.")
    keystrokes = models.BooleanField(default=False, help_text="Which keys were pressed is in it.")
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    bytes = models.BigIntegerField(default=0)
    note = models.CharField(max_length=255, blank=True, help_text="Why it stopped early, if it did.")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"recording of {self.session}"


class RecordingPlayback(models.Model):
    """An audit record: who played (or downloaded) a recording, when, how."""

    recording = models.ForeignKey(ConsoleRecording, on_delete=models.CASCADE, related_name="playbacks")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    via = models.CharField(max_length=16, help_text="page, download or api")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.user} played {self.recording}"


class LiveMigration(models.Model):
    """A running VM moved from one host to another (libvirt live migration), with its progress."""

    class State(models.TextChoices):
        RUNNING = "running", "moving"
        DONE = "done", "moved"
        FAILED = "failed", "failed (the VM stayed where it was)"

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="live_migrations")
    source = models.ForeignKey(Host, null=True, on_delete=models.SET_NULL, related_name="+")
    target = models.ForeignKey(Host, null=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    data_total = models.BigIntegerField(default=0, help_text="Bytes of the VM's memory to move.")
    data_remaining = models.BigIntegerField(default=0)
    downtime_ms = models.IntegerField(
        null=True, blank=True, help_text="How long the VM was paused at the switch."
    )
    elapsed_ms = models.IntegerField(null=True, blank=True, help_text="How long the move took.")
    error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.vm} from {self.source} to {self.target} ({self.state})"

    @property
    def percent(self) -> int:
        if self.state == self.State.DONE:
            return 100
        if not self.data_total:
            return 0
        return max(0, min(99, round(100 * (self.data_total - self.data_remaining) / self.data_total)))


class HostMaintenance(models.Model):
    """A host put in maintenance: its running VMs moved away one at a time, with what moved
    where and what stayed (and why) in `summary`, until staff end it."""

    class State(models.TextChoices):
        EMPTYING = "emptying", "moving its VMs away"
        EMPTY = "empty", "empty"
        INCOMPLETE = "incomplete", "some VMs could not move"
        ENDED = "ended", "ended"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="maintenances")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.EMPTYING)
    started_at = models.DateTimeField(auto_now_add=True)
    emptied_at = models.DateTimeField(null=True, blank=True, help_text="When the last VM was tried.")
    ended_at = models.DateTimeField(null=True, blank=True, help_text="When the host took VMs again.")
    summary = models.JSONField(
        default=list, blank=True, help_text='One entry per VM: {"vm", "moved_to"} or {"vm", "stayed"}.'
    )

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.host} maintenance ({self.state})"


class AuthEvent(models.Model):
    """A login, logout or refused login to the portal (pages and admin): who, from where, when."""

    class Action(models.TextChoices):
        LOGIN = "login"
        LOGOUT = "logout"
        REFUSED = "login refused"
        SECOND_FACTOR = "second factor"
        SECOND_FACTOR_REFUSED = "factor refused"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, help_text="As typed, for a refused login.")
    action = models.CharField(max_length=16, choices=Action.choices)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.username} at {self.at:%Y-%m-%d %H:%M:%S}"


class VmGrant(models.Model):
    """A role on one VM, or on every VM of a host (a pool), for a user or a group.

    viewer: watch its console; operator: its console, serial console, .vv and power; admin: all
    of that and sharing it. Owners and staff keep every right without a grant.
    """

    class Role(models.TextChoices):
        VIEWER = "viewer", _("viewer (watch the console)")
        OPERATOR = "operator", _("operator (console, serial, .vv, power)")
        ADMIN = "admin", _("admin (all, sharing included)")

    vm = models.ForeignKey(
        VirtualMachine, null=True, blank=True, on_delete=models.CASCADE, related_name="grants"
    )
    host = models.ForeignKey(
        Host,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="grants",
        help_text="Every VM of this host.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="vm_grants"
    )
    group = models.ForeignKey(
        "auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="vm_grants"
    )
    role = models.CharField(max_length=8, choices=Role.choices)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(vm__isnull=False, host__isnull=True) | Q(vm__isnull=True, host__isnull=False),
                name="grant_on_a_vm_or_a_host",
            ),
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="grant_to_a_user_or_a_group",
            ),
        ]

    def __str__(self) -> str:
        on = f"VM {self.vm}" if self.vm_id else f"host {self.host}"
        to = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{self.role} on {on} for {to}"

    def clean(self) -> None:
        if bool(self.vm_id) == bool(self.host_id):
            raise ValidationError("Grant a role on a VM or on a host (all its VMs), not both.")
        if bool(self.user_id) == bool(self.group_id):
            raise ValidationError("Grant a role to a user or to a group, not both.")


class DirectoryAccount(models.Model):
    """An account that logs in through the directory (LDAP): its entry's DN, and when the portal
    last read it, so that a user removed from the directory, or from its allowed group, loses
    access within LDAP_RECHECK_SECONDS (console.directory)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="directory")
    dn = models.CharField(max_length=512)
    checked_at = models.DateTimeField()
    suspended = models.BooleanField(
        default=False,
        help_text="Made inactive because the directory dropped it (a later login may bring it back); "
        "an account an administrator made inactive stays so.",
    )

    def __str__(self) -> str:
        return self.dn


class IdentityAccount(models.Model):
    """An account that signs in through the OpenID Connect provider (console.sso): the provider's
    subject for it, its tokens (encrypted; the portal reads the user's groups again with them)
    and when it last did, so that a user the provider drops loses access within
    OIDC_RECHECK_SECONDS."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    access_token = models.TextField(blank=True, help_text="Encrypted (Fernet).")
    access_expires_at = models.DateTimeField(null=True, blank=True)
    refresh_token = models.TextField(blank=True, help_text="Encrypted (Fernet).")
    checked_at = models.DateTimeField()
    suspended = models.BooleanField(
        default=False,
        help_text="Made inactive because the provider dropped it (a later sign-in may bring it back); "
        "an account an administrator made inactive stays so.",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="identity_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class ControlHandover(models.Model):
    """Control of a VNC console handed from one person to another (console.control).

    A watcher asks for control; whoever has input on that console accepts or refuses. Once
    accepted, the proxy passes the requester's keys and mouse and drops the holder's, on every
    console page of their login sessions, until either ends it. Recorded per login session, so
    a page that reconnects (a fresh ticket) keeps what was handed."""

    class State(models.TextChoices):
        ASKED = "asked"
        ACCEPTED = "accepted"
        REFUSED = "refused"
        WITHDRAWN = "withdrawn"
        ENDED = "ended"

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="handovers")
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    requester_session = models.CharField(max_length=40)
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    holder_session = models.CharField(max_length=40, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ASKED)
    asked_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["vm", "state"], name="handover_vm_state")]

    def __str__(self) -> str:
        return f"{self.vm}: {self.requester} {self.state}"
