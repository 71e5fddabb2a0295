"""Django admin: global settings (validated, audited, resettable), hosts, VMs and audit records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from console.audit import MAX_ROWS, AuditFilter, audit_csv, audit_rows
from console.auth import User
from console.errors import PortalError
from console.globalconfig import CONSOLE_MODE, config_reset, config_set, definition_get
from console.hosts import host_check, host_checks, host_health, host_key_advice
from console.hypervisor import HypervisorError
from console.hypervisor.ssh import ssh_target
from console.livemigration import vm_migrate
from console.maintenance import NO_TARGET, host_maintenance_enter, host_maintenance_leave, least_loaded_host
from console.models import (
    ConsoleRecording,
    ConsoleSession,
    ConsoleTicket,
    GlobalConfigChange,
    GlobalConfigValue,
    Host,
    HostMaintenance,
    LiveMigration,
    RecordingPlayback,
    VirtualMachine,
    VmEvent,
    VmGrant,
)
from console.sessions import console_session_end_request
from console.vms import vms_restart_required_count

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from django.http import HttpRequest


class GlobalConfigValueForm(forms.ModelForm):
    class Meta:
        model = GlobalConfigValue
        fields = ["value"]

    def clean_value(self):
        value = self.cleaned_data.get("value")
        if value in (None, ""):
            return None  # empty means "use the default"
        return definition_get(self.instance.key).clean(value)


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


def _admin_user(request: HttpRequest) -> User:
    """The account using the admin site (the site lets in logged-in staff only)."""
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


def _tell_restart_needed(modeladmin: admin.ModelAdmin, request: HttpRequest) -> None:
    try:
        count = vms_restart_required_count()
    except HypervisorError as exc:
        modeladmin.message_user(
            request, f"Could not count running VMs that need a restart: {exc}", messages.WARNING
        )
        return
    if count:
        modeladmin.message_user(
            request,
            f"{count} running VM{'s' if count != 1 else ''} keep{'s' if count == 1 else ''} the "
            "old console protocol until restarted.",
            messages.WARNING,
        )
    else:
        modeladmin.message_user(request, "No running VM needs a restart for this change.")


@admin.register(GlobalConfigValue)
class GlobalConfigValueAdmin(admin.ModelAdmin):
    form = GlobalConfigValueForm
    list_display = ["key", "current_value", "default", "valid_values", "description"]
    list_display_links = ["key"]
    readonly_fields = ["key", "default", "valid_values", "description"]
    fields = ["key", "value", "default", "valid_values", "description"]
    actions = ["reset_to_default"]

    @admin.display(description="setting")
    def key(self, obj):
        return obj.key

    @admin.display(description="current value")
    def current_value(self, obj):
        return obj.value if obj.value not in (None, "") else f"{self.default(obj)} (default)"

    def default(self, obj):
        return definition_get(obj.key).default

    @admin.display(description="valid values")
    def valid_values(self, obj):
        return ", ".join(definition_get(obj.key).valid_values) or "any"

    def description(self, obj):
        return definition_get(obj.key).description

    def has_add_permission(self, request: HttpRequest):
        return False  # definitions live in code

    def has_delete_permission(self, request: HttpRequest, obj=None):
        return False  # reset to the default instead

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if obj is not None:
            definition = definition_get(obj.key)
            form.base_fields["value"].help_text = (
                f"Valid values: {', '.join(definition.valid_values) or 'any'}. "
                f"Leave empty for the default ({definition.default})."
            )
        return form

    def save_model(self, request: HttpRequest, obj, form, change):
        old, new = config_set(
            key=obj.key, value=form.cleaned_data["value"], actor=_actor(request), user=_admin_user(request)
        )
        if obj.key == CONSOLE_MODE and old != new:
            _tell_restart_needed(self, request)

    @admin.action(description="Reset the selected settings to their defaults", permissions=["change"])
    def reset_to_default(self, request: HttpRequest, queryset: QuerySet):
        changed_mode = False
        for row in queryset:
            old, new = config_reset(key=row.key, actor=_actor(request), user=_admin_user(request))
            changed_mode |= row.key == CONSOLE_MODE and old != new
        self.message_user(request, f"Reset {queryset.count()} setting(s) to the default.")
        if changed_mode:
            _tell_restart_needed(self, request)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest):
        return False

    def has_change_permission(self, request: HttpRequest, obj=None):
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None):
        return False


@admin.register(GlobalConfigChange)
class GlobalConfigChangeAdmin(ReadOnlyAdmin):
    list_display = ["changed_at", "category", "name", "old_value", "new_value", "actor"]
    list_filter = ["category", "name"]


class VmGrantInline(admin.TabularInline):
    """Who else may watch or operate the VM (roles: see VmGrantAdmin)."""

    model = VmGrant
    fields = ["role", "user", "group"]
    autocomplete_fields = ["user", "group"]
    extra = 0


class HostGrantInline(VmGrantInline):
    """Roles on every VM of the host (a pool)."""

    fk_name = "host"


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    inlines = [HostGrantInline]
    list_display = ["name", "uri", "health", "vm_count", "maintenance", "console_listen_address"]
    actions = ["maintenance_enter", "maintenance_leave"]
    fieldsets = [
        (None, {"fields": ["name", "uri"]}),
        ("SSH (qemu+ssh:// hosts)", {"fields": ["ssh_key_file", "ssh_host_key"]}),
        (
            "Consoles",
            {"fields": ["console_listen_address", "listen_on_all_interfaces", "console_client_address"]},
        ),
        ("SPICE TLS", {"fields": ["spice_ca_cert", "spice_host_subject"], "classes": ["collapse"]}),
        ("Live migration", {"fields": ["migration_address"]}),
        ("Maintenance", {"fields": ["maintenance"]}),
    ]
    readonly_fields = ["maintenance"]  # the actions set it: entering moves the VMs away

    @admin.action(description="Enter maintenance: no VM starts here; move its running VMs away")
    def maintenance_enter(self, request: HttpRequest, queryset: QuerySet):
        for host in queryset:
            try:
                host_maintenance_enter(host=host, user=_admin_user(request))
            except PortalError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                continue
            self.message_user(
                request,
                f"{host.name} is in maintenance; its running VMs are moving to other hosts, one at "
                "a time. Host maintenances shows what moved and what stayed.",
            )

    @admin.action(description="Leave maintenance: VMs start and move here again")
    def maintenance_leave(self, request: HttpRequest, queryset: QuerySet):
        for host in queryset:
            host_maintenance_leave(host=host, user=_admin_user(request))
            self.message_user(request, f"{host.name} takes VMs again.")

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(vms=Count("virtualmachine"))

    def changelist_view(self, request: HttpRequest, extra_context=None):
        host_checks(list(Host.objects.all()))  # side by side, before the rows ask one by one
        return super().changelist_view(request, extra_context)

    @admin.display(description="health")
    def health(self, obj):
        health = host_health(obj)
        return format_html("{} {}", "✔" if health.ok else "✘", health.text)

    @admin.display(description="VMs", ordering="vms")
    def vm_count(self, obj):
        return obj.vms

    def save_model(self, request: HttpRequest, obj, form, change):
        super().save_model(request, obj, form, change)
        health = host_check(obj)
        if health.ok:
            self.message_user(request, f"Host {obj.name} answers: {health.text}.")
            return
        self.message_user(request, f"Saved, but host {health.text}", messages.WARNING)
        if ssh_target(obj) is not None and not obj.ssh_host_key:
            self.message_user(request, host_key_advice(obj), messages.WARNING)


@admin.register(VirtualMachine)
class VirtualMachineAdmin(admin.ModelAdmin):
    inlines = [VmGrantInline]
    list_display = ["name", "owner", "host", "console_mode", "started_mode", "vcpus", "memory_mib"]
    list_filter = ["host", "console_mode"]
    search_fields = ["name", "owner__username"]
    readonly_fields = ["uuid", "started_mode", "created_at"]
    actions = ["end_console_sessions", "move_away", "audit_export"]

    @admin.action(description="Export the selected VMs' audit trail (CSV)")
    def audit_export(self, request: HttpRequest, queryset: QuerySet):
        rows = [row for vm in queryset for row in audit_rows(AuditFilter(vm=vm.name, limit=MAX_ROWS))]
        rows.sort(key=lambda row: row["at"], reverse=True)
        response = HttpResponse(audit_csv(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit.csv"'
        return response

    @admin.action(description="Move the selected running VMs to the least loaded other host")
    def move_away(self, request: HttpRequest, queryset: QuerySet):
        for vm in queryset.select_related("host"):
            target = least_loaded_host(excluding=vm.host)
            if target is None:
                self.message_user(request, f"{vm.name} stays: {NO_TARGET}.", messages.ERROR)
                continue
            try:
                vm_migrate(vm=vm, target=target, user=_admin_user(request))
            except PortalError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                continue
            self.message_user(request, f"{vm.name} is moving to {target.name}; its page shows how far.")

    @admin.action(description="End the selected VMs' open console sessions")
    def end_console_sessions(self, request: HttpRequest, queryset: QuerySet):
        ended = _end_sessions(request, ConsoleSession.objects.filter(vm__in=queryset))
        self.message_user(request, f"Ending {ended} console session(s); their pages will say why.")


@admin.register(VmEvent)
class VmEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "vm", "action", "detail", "user"]
    list_filter = ["action"]


@admin.register(ConsoleSession)
class ConsoleSessionAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "ended_at",
        "vm",
        "user",
        "via",
        "protocol",
        "client_address",
        "bytes_to_client",
        "bytes_from_client",
        "end_reason",
        "recorded",
    ]
    list_filter = ["via", "protocol", "end_reason"]
    list_select_related = ["vm", "user", "recording"]

    @admin.display(description="recording")
    def recorded(self, obj: ConsoleSession):
        recording = getattr(obj, "recording", None)
        if recording is None:
            return "—"
        return format_html('<a href="{}">Play</a>', reverse("console:recording", args=[recording.pk]))

    search_fields = ["vm__name", "user__username", "client_address"]
    actions = ["end_sessions"]

    def has_change_permission(self, request: HttpRequest, obj=None):
        return obj is None and request.user.is_staff  # for the action; the records stay read-only

    @admin.action(description="End the selected open sessions")
    def end_sessions(self, request: HttpRequest, queryset: QuerySet):
        ended = _end_sessions(request, queryset)
        self.message_user(request, f"Ending {ended} console session(s); their pages will say why.")


def _end_sessions(request: HttpRequest, sessions) -> int:
    """Ask every open one of `sessions` to end (each ends at its process's next check)."""
    open_ids = sessions.filter(ended_at__isnull=True).values_list("pk", flat=True)
    return sum(console_session_end_request(session_id=pk, by=_admin_user(request)) for pk in list(open_ids))


@admin.register(ConsoleTicket)
class ConsoleTicketAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "expires_at",
        "kind",
        "vm",
        "user",
        "protocol",
        "connections",
        "max_connections",
    ]
    list_filter = ["kind", "protocol"]
    exclude = ["token_hash"]


@admin.register(ConsoleRecording)
class ConsoleRecordingAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "ended_at", "vm", "user", "protocol", "channel", "bytes", "note", "play"]
    list_filter = ["protocol", "keystrokes"]
    search_fields = ["vm__name", "user__username"]

    @admin.display(description="")
    def play(self, obj: ConsoleRecording):
        return format_html('<a href="{}">Play</a>', reverse("console:recording", args=[obj.pk]))


@admin.register(RecordingPlayback)
class RecordingPlaybackAdmin(ReadOnlyAdmin):
    list_display = ["at", "user", "recording", "via"]


@admin.register(LiveMigration)
class LiveMigrationAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "ended_at",
        "vm",
        "source",
        "target",
        "state",
        "percent",
        "requested_by",
        "error",
    ]
    list_filter = ["state"]
    search_fields = ["vm__name"]


@admin.register(HostMaintenance)
class HostMaintenanceAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "host", "state", "moved", "stayed", "emptied_at", "ended_at"]
    list_filter = ["state", "host"]
    list_select_related = ["host", "requested_by"]

    @admin.display(description="moved")
    def moved(self, obj: HostMaintenance):
        return ", ".join(f"{e['vm']} → {e['moved_to']}" for e in obj.summary if "moved_to" in e) or "—"

    @admin.display(description="stayed (why)")
    def stayed(self, obj: HostMaintenance):
        return "; ".join(f"{e['vm']}: {e['stayed']}" for e in obj.summary if "stayed" in e) or "—"


@admin.register(VmGrant)
class VmGrantAdmin(admin.ModelAdmin):
    """Roles on a VM or on all of a host's VMs, for a user or a group (see console.access)."""

    list_display = ["role", "vm", "host", "user", "group", "granted_by", "created_at"]
    list_filter = ["role", "host"]
    search_fields = ["vm__name", "user__username", "group__name"]
    autocomplete_fields = ["vm", "user", "group"]
    readonly_fields = ["granted_by", "created_at"]

    def save_model(self, request: HttpRequest, obj, form, change):
        obj.granted_by = _admin_user(request)
        super().save_model(request, obj, form, change)
