"""The admin console, made for operators: clients, peers, keys, quotas, model pins, receipts
and alerts, with the actions an operator needs and a visible alert banner."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.utils import timezone

from control.console import selectors, services
from control.console.client_address import client_address
from control.console.models import (
    Alert,
    ApiKey,
    ApplianceIdentity,
    Checkpoint,
    Client,
    ModelPin,
    Peer,
    PolicyPush,
    Quota,
    Receipt,
)
from provisioning import keys


class KeepAdminSite(admin.AdminSite):
    site_header = "Keep appliance console"
    site_title = "Keep"
    index_title = "Operations"

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        if request.user.is_authenticated:
            context["keep_alerts"] = selectors.alert_open_count()
        return context

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # Failures lock the address they came from: one user name from it, or every name
        # once it has failed too many. Nobody can lock a user name out for everyone.
        if request.method == "POST":
            since = timezone.now() - timedelta(seconds=settings.KEEP.control_login_window_s)
            address = client_address(request)
            pair = selectors.login_failure_count(
                username=request.POST.get("username", ""), address=address, since=since
            )
            anyone = selectors.login_failure_address_count(address=address, since=since)
            if (
                pair >= settings.KEEP.control_login_attempts
                or anyone >= settings.KEEP.control_login_address_attempts
            ):
                return HttpResponse(
                    "Too many failed logins from this address; try again later.", status=429
                )
        return super().login(request, extra_context)


site = KeepAdminSite(name="keep")


class QuotaInline(admin.StackedInline):
    model = Quota
    can_delete = True
    extra = 0


class ExportForm(forms.Form):
    start = forms.DateField(help_text="First day, UTC (YYYY-MM-DD)")
    end = forms.DateField(help_text="Last day, UTC, included")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise forms.ValidationError("The range ends before it starts.")
        return data


@admin.register(Client, site=site)
class ClientAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "created", "active_peers")
    list_filter = ("kind",)
    search_fields = ("name",)
    inlines = (QuotaInline,)

    @admin.display(description="Active peers")
    def active_peers(self, obj: Client) -> int:
        return selectors.peer_active_count(client=obj)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:pk>/export/",
                self.admin_site.admin_view(self.export_view),
                name="console_client_export",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        # The export is the client's receipts: the right to view both.
        if not (
            self.has_view_permission(request) and request.user.has_perm("console.view_receipt")
        ):
            return HttpResponse(status=403)
        client = get_object_or_404(Client, pk=pk)
        form = ExportForm(request.GET or None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "form": form,
                "client": client,
                "title": f"Export receipts of {client}",
            }
            return render(request, "admin/console/export.html", context)
        start = datetime.combine(form.cleaned_data["start"], time.min, UTC)
        end = datetime.combine(form.cleaned_data["end"] + timedelta(days=1), time.min, UTC)
        response = StreamingHttpResponse(
            selectors.receipt_export(client=client, start=start, end=end),
            content_type="application/jsonl",
        )
        name = f"receipts-{client.pk}-{_day(start)}-{_day(end - timedelta(days=1))}.jsonl"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


def _day(moment: datetime | date) -> str:
    return moment.strftime("%Y%m%d")


class PeerForm(forms.ModelForm):
    class Meta:
        model = Peer
        fields = ("client", "name", "public_key", "server_generated")

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if not name.replace("-", "").replace("_", "").isalnum():
            raise forms.ValidationError("Letters, digits, '-' and '_' only.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "public_key" not in self.fields:  # a change form with nothing left to edit
            return data
        public, generated = data.get("public_key", "").strip(), data.get("server_generated")
        if self.instance.pk is not None:  # rotating an active peer's key: only the key changes
            if not public:
                self.add_error("public_key", "Paste the client's new public key.")
        elif bool(public) == bool(generated):
            raise forms.ValidationError(
                "Paste the public key the client generated (the default), or tick "
                "server-generated, not both."
            )
        if public:
            try:
                data["public_key"] = keys.check_public(public)
            except ValueError as exc:
                self.add_error("public_key", str(exc))
                return data
            # The database's constraint covers this too, but Django's form validation skips a
            # constraint whose condition names a field the form lacks (revoked_at).
            if selectors.peer_public_key_taken(
                public_key=data["public_key"], exclude_pk=self.instance.pk
            ):
                self.add_error("public_key", "An active peer already has this public key.")
        return data


def _become(unsaved: Any, created: Any) -> None:
    """The admin goes on with the form's own instance (change message, redirect), so it
    becomes the row that the service created."""
    unsaved.pk = created.pk
    unsaved.refresh_from_db()


def _zip(peer: Peer, content: bytes) -> HttpResponse:
    response = HttpResponse(content, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="keep-{peer.name}.zip"'
    response["Cache-Control"] = "no-store"
    return response


@admin.register(Peer, site=site)
class PeerAdmin(admin.ModelAdmin):
    form = PeerForm
    list_display = (
        "name",
        "client",
        "address",
        "server_generated",
        "created",
        "revoked_at",
        "last_handshake",
    )
    list_filter = ("client", ("revoked_at", admin.EmptyFieldListFilter), "server_generated")
    search_fields = ("name", "client__name", "address", "public_key")
    actions = ("download_bundle", "rotate_key", "revoke")

    def get_readonly_fields(self, request: HttpRequest, obj: Peer | None = None) -> Any:
        if obj is None:
            return ()
        fixed = ("client", "name", "server_generated", "address", "revoked_at", "last_handshake")
        # An active peer whose client made its own key pair can rotate it here: paste the new
        # public key, and saving it replaces the peer in WireGuard (the address, API keys and
        # preshared key stay). A server-generated peer rotates by downloading a new bundle.
        if obj.active and not obj.server_generated:
            return fixed
        return (*fixed, "public_key")

    def save_model(self, request: HttpRequest, obj: Peer, form: Any, change: bool) -> None:
        if change:
            if "public_key" in form.fields:  # otherwise nothing on the form is editable
                services.peer_public_key_rotate(
                    peer=obj, public_key=form.cleaned_data["public_key"]
                )
            return
        created = services.peer_create(
            client=obj.client,
            name=obj.name,
            public_key=obj.public_key,
            server_generated=obj.server_generated,
        )
        _become(obj, created)

    def has_issue_bundle_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("console.issue_bundle"))

    def _one(self, request: HttpRequest, queryset: QuerySet[Peer]) -> Peer | None:
        if queryset.count() != 1 or not queryset[0].active:
            self.message_user(request, "Select exactly one active peer.", messages.ERROR)
            return None
        return queryset[0]

    @admin.action(
        description="Download client bundle (issues a new API key and preshared key)",
        permissions=["issue_bundle"],
    )
    def download_bundle(self, request: HttpRequest, queryset: QuerySet[Peer]) -> Any:
        peer = self._one(request, queryset)
        return None if peer is None else _zip(peer, services.bundle_issue(peer=peer))

    @admin.action(
        description="Rotate API key: revoke its keys, download a new bundle",
        permissions=["issue_bundle"],
    )
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Peer]) -> Any:
        peer = self._one(request, queryset)
        if peer is None:
            return None
        return _zip(peer, services.api_key_rotate(peer=peer))

    @admin.action(description="Revoke selected peers and their keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Peer]) -> None:
        now = timezone.now()
        for peer in queryset.filter(revoked_at__isnull=True):
            services.peer_revoke(peer=peer, now=now)
        self.message_user(request, "Revoked; the appliance policy was pushed.")


@admin.register(ApiKey, site=site)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "peer", "created", "expires_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "peer__client")
    search_fields = ("prefix", "peer__name", "peer__client__name")
    readonly_fields = ("peer", "prefix", "digest", "created", "expires_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued in a client bundle, where they are shown once

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        services.api_key_revoke(keys=queryset)
        self.message_user(request, "Revoked; the appliance policy was pushed.")


@admin.register(ModelPin, site=site)
class ModelPinAdmin(admin.ModelAdmin):
    list_display = ("name", "sha256", "active", "created")
    list_filter = ("active",)
    search_fields = ("name", "sha256")

    def save_model(self, request: HttpRequest, obj: ModelPin, form: Any, change: bool) -> None:
        if change:
            services.model_pin_update(pin=obj, fields=list(form.changed_data))
            return
        created = services.model_pin_create(
            name=obj.name, path=obj.path, sha256=obj.sha256, active=obj.active
        )
        _become(obj, created)

    def delete_model(self, request: HttpRequest, obj: ModelPin) -> None:
        services.model_pin_delete(pins=ModelPin.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelPin]) -> None:
        services.model_pin_delete(pins=queryset)


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Receipt, site=site)
class ReceiptAdmin(ReadOnly):
    list_display = (
        "seq",
        "client",
        "peer_id",
        "session_id",
        "ended_at",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "requests",
    )
    list_filter = ("client", "model")
    search_fields = ("session_id", "peer_id")
    date_hierarchy = "ended_at"
    actions = ("pull_now",)

    def has_pull_receipts_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("console.pull_receipts"))

    @admin.action(
        description="Pull new receipts from the appliance now", permissions=["pull_receipts"]
    )
    def pull_now(self, request: HttpRequest, queryset: QuerySet[Receipt]) -> None:
        try:
            added = services.receipt_ingest()
        except services.IngestStopped as exc:
            self.message_user(request, f"Ingest stopped: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"{added} receipt(s) verified and added.")


@admin.register(Alert, site=site)
class AlertAdmin(ReadOnly):
    list_display = ("created", "kind", "detail", "acknowledged")
    list_filter = ("kind", "acknowledged")
    actions = ("acknowledge",)
    readonly_fields = ("kind", "detail", "created", "acknowledged")  # acknowledged by action

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("console.change_alert"))

    @admin.action(description="Acknowledge", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        services.alert_acknowledge(alerts=queryset)


@admin.register(PolicyPush, site=site)
class PolicyPushAdmin(ReadOnly):
    list_display = ("pushed_at", "version", "ok", "error")
    list_filter = ("ok",)
    actions = ("push_now",)

    def has_push_policy_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("console.push_policy"))

    @admin.action(description="Push the policy now", permissions=["push_policy"])
    def push_now(self, request: HttpRequest, queryset: QuerySet[PolicyPush]) -> None:
        result = services.policy_push()
        level = messages.SUCCESS if result.ok else messages.ERROR
        self.message_user(request, str(result), level)


site.register(Checkpoint, ReadOnly)
site.register(ApplianceIdentity, ReadOnly)
