"""API keys: a customer's (or a partner's) secret for the usage API."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import connection, models
from django.db.models import Q
from django.utils import timezone

from billing.models.customers import Customer, Partner

API_KEY_PREFIX = "ppk_"


def hash_api_secret(token: str) -> str:
    """SHA-256 of the whole token. The secret is 32 random bytes, so a fast hash is
    enough (no dictionary to guess from) and lets us look a key up by its hash."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A bearer token for the JSON API. Only the SHA-256 of the secret is stored;
    the secret itself is shown once, when the key is created. A key restricted to
    a partner sees and bills only that partner's customers."""

    # How stale last_used_at may get before a request writes it again: one UPDATE
    # per key per minute instead of one per request.
    LAST_USED_RESOLUTION = timedelta(minutes=1)
    # The columns authentication loads; the others load on access.
    AUTH_COLUMNS = [
        "id",
        "name",
        "prefix",
        "secret_hash",
        "partner_id",
        "last_used_at",
        "revoked_at",
    ]
    # False while the key comes from a per-process memory and its revocation has
    # not been checked against the database yet (billing.api.api_key_of).
    checked = True

    name = models.CharField(
        max_length=100, help_text="Who or what uses it, e.g. 'metering service'."
    )
    prefix = models.CharField(
        max_length=16,
        unique=True,
        editable=False,
        help_text="The start of the key, to recognise it.",
    )
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="Restrict the key to this partner's customers. Empty: all customers.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.CharField(max_length=200, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def assign_secret(self) -> str:
        """Give the key a new random secret and return the token (shown once); only
        its hash is kept."""
        token = API_KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix = token[: len(API_KEY_PREFIX) + 8]
        self.secret_hash = hash_api_secret(token)
        return token

    @classmethod
    def issue(
        cls, *, name: str, partner: Partner | None = None, created_by: str = ""
    ) -> tuple[ApiKey, str]:
        key = cls(name=name, partner=partner, created_by=created_by)
        token = key.assign_secret()
        key.save()
        return key, token

    @classmethod
    def for_token(cls, token: str) -> ApiKey | None:
        """The key this token belongs to, revoked or not (the caller decides)."""
        if not token.startswith(API_KEY_PREFIX):
            return None
        # A plain statement, no query compilation.
        names = cls.AUTH_COLUMNS
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(names)} FROM billing_apikey WHERE secret_hash = %s",  # noqa: S608
                [hash_api_secret(token)],
            )
            row = cursor.fetchone()
        return None if row is None else cls.from_db(connection.alias, names, list(row))

    def revoke(self, *, by: str = "") -> bool:
        """Revoke for good; True if this call revoked it. A conditional UPDATE, so
        two staff members revoking at once record one revocation."""
        now = timezone.now()
        done = ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=by
        )
        if done:
            self.revoked_at, self.revoked_by = now, by
        return bool(done)

    def touch(self) -> None:
        """Record use, at most once per LAST_USED_RESOLUTION."""
        now = timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < self.LAST_USED_RESOLUTION:
            return
        ApiKey.objects.filter(pk=self.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - self.LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        self.last_used_at = now

    def may_see(self, customer: Customer) -> bool:
        return self.partner_id is None or customer.partner_id == self.partner_id
