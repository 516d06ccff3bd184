"""Control's records: clients, their WireGuard peers and API keys, quotas, model pins, and
the receipts ingested from the appliance with the alerts their checks raise. Data,
constraints and small pure helpers only: the writes are in services/, the reads in
selectors.py."""

from __future__ import annotations

from datetime import datetime

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Client(models.Model):
    ORGANISATION, APP = "organisation", "app"
    name = models.CharField(max_length=128, unique=True)
    kind = models.CharField(
        max_length=16, choices=[(ORGANISATION, "Organisation"), (APP, "Application")]
    )
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def policy_id(self) -> str:
        return f"client-{self.pk}"


class PeerQuerySet(models.QuerySet):
    def active(self) -> PeerQuerySet:
        return self.filter(revoked_at__isnull=True)


class Peer(models.Model):
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="peers")
    name = models.CharField(max_length=64)
    # Empty until a server-generated peer's bundle is first downloaded.
    public_key = models.CharField(max_length=44, blank=True, default="")
    server_generated = models.BooleanField(
        default=False, help_text="The server generates the key pair (opt-in); it never stores it."
    )
    address = models.GenericIPAddressField(protocol="both", unpack_ipv4=True)
    # WireGuard's preshared key, issued with each bundle: a second, symmetric layer on the
    # tunnel's handshake (post-quantum margin). WireGuard needs it in the clear, so it is
    # kept here, never shown in the console, and wiped on revocation. Empty: none issued yet.
    preshared_key = models.CharField(max_length=44, blank=True, default="", editable=False)
    created = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_handshake = models.DateTimeField(null=True, blank=True)

    objects = PeerQuerySet.as_manager()

    class Meta:
        # Issuing a bundle (or rotating its API key) makes new keys and breaks the tunnel of
        # the client's current bundle: a right of its own, apart from editing a peer.
        permissions = [("issue_bundle", "Can issue a client bundle (new API and preshared keys)")]
        constraints = [
            models.UniqueConstraint(
                fields=["address"], condition=Q(revoked_at__isnull=True), name="active_address"
            ),
            models.UniqueConstraint(
                fields=["public_key"],
                condition=Q(revoked_at__isnull=True) & ~Q(public_key=""),
                name="active_public_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client.name}/{self.name}"

    @property
    def policy_id(self) -> str:
        return f"peer-{self.pk}"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class ApiKey(models.Model):
    peer = models.ForeignKey(Peer, on_delete=models.PROTECT, related_name="keys")
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}…"

    def usable(self, now: datetime) -> bool:
        return (
            self.revoked_at is None
            and self.peer.revoked_at is None
            and (self.expires_at is None or self.expires_at > now)
        )


class Quota(models.Model):
    client = models.OneToOneField(Client, on_delete=models.CASCADE, related_name="quota")
    requests_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    requests_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    # The client's class in the appliance's waiting line for KV sequences (0 the lowest, up
    # to KEEP_PRIORITY_CLASSES - 1); empty means KEEP_CLIENT_DEFAULT_PRIORITY.
    priority = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(15)]
    )
    # The client's rates and requests in flight (appliance/ratelimit.py); empty means the
    # appliance's KEEP_CLIENT_REQUESTS_PER_SECOND, _REQUEST_BURST, _TOKENS_PER_MINUTE and
    # _MAX_REQUESTS.
    requests_per_second = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100_000)]
    )
    request_burst = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    tokens_per_minute = models.PositiveBigIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(10**15)]
    )
    max_in_flight = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(4096)]
    )

    def __str__(self) -> str:
        return f"quota of {self.client}"


class ModelPin(models.Model):
    name = models.CharField(max_length=128)
    path = models.CharField(max_length=1024)
    sha256 = models.CharField(max_length=64)
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "sha256"], name="one_pin")]

    def __str__(self) -> str:
        return f"{self.name} ({self.sha256[:12]})"


class Receipt(models.Model):
    """One verified log entry. `body` is the receipt as signed (RFC 8785 JSON)."""

    seq = models.PositiveBigIntegerField(unique=True)
    session_id = models.CharField(max_length=128, db_index=True)
    peer_id = models.CharField(max_length=64, db_index=True)
    client = models.ForeignKey(Client, null=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(db_index=True)
    model = models.CharField(max_length=128)
    model_sha256 = models.CharField(max_length=64)
    prompt_tokens = models.PositiveBigIntegerField()
    completion_tokens = models.PositiveBigIntegerField()
    requests = models.PositiveIntegerField()
    body = models.TextField()
    signature = models.CharField(max_length=128)
    leaf_hash = models.CharField(max_length=64)
    ingested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-seq"]
        permissions = [("pull_receipts", "Can pull receipts from the appliance now")]

    def __str__(self) -> str:
        return f"receipt {self.seq}"


class Checkpoint(models.Model):
    """The latest checkpoint control verified against the receipts it holds."""

    size = models.PositiveBigIntegerField(unique=True)
    note = models.TextField()
    verified_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"checkpoint at {self.size}"


class ApplianceIdentity(models.Model):
    """The appliance's receipt key, trusted on first contact; a change raises an alert."""

    verifier_key = models.CharField(max_length=256, unique=True)
    first_seen = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.verifier_key.split("+")[0]


class Alert(models.Model):
    GAP, BAD_ENTRY, BAD_TREE, ROLLBACK, KEY_CHANGED, PUSH_FAILED, UNREACHABLE = (
        "gap",
        "bad_entry",
        "bad_tree",
        "rollback",
        "key_changed",
        "push_failed",
        "unreachable",
    )
    PERIMETER_FAILED, DRIFT = "perimeter_failed", "drift"
    kind = models.CharField(max_length=32)
    detail = models.CharField(max_length=512)
    created = models.DateTimeField(auto_now_add=True)
    acknowledged = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class PolicyPush(models.Model):
    version = models.PositiveBigIntegerField()
    digest = models.CharField(max_length=64, blank=True)
    pushed_at = models.DateTimeField(auto_now_add=True)
    ok = models.BooleanField()
    error = models.CharField(max_length=512, blank=True)

    class Meta:
        ordering = ["-pushed_at"]
        permissions = [("push_policy", "Can push the policy to the appliance now")]

    def __str__(self) -> str:
        return f"policy {self.version}: {'applied' if self.ok else 'failed'}"


class LoginFailure(models.Model):
    username = models.CharField(max_length=150, db_index=True)
    address = models.GenericIPAddressField(null=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
