"""Authentication of the API: bearer API keys, remembered per process, and the
router every endpoint hangs off."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.

from django.db import connection
from django.http import HttpRequest
from ninja import Router
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from billing.models import (
    API_KEY_PREFIX,
    ApiKey,
    hash_api_secret,
)


class ApiKeyAuth(HttpBearer):
    """Bearer API keys. Every refusal says what is wrong with the key.

    Known keys are remembered per process (`KNOWN_KEYS`, by the hash of the
    secret), so a usage request does not spend a round trip on its key. A key
    from that memory is *not yet checked*: revocation must take effect at once,
    so `api_key_of()` checks it against the database before the request is
    served, except where the view's own statement checks it (the usage
    endpoints: `billing.usage.rating.LOOKUP_SQL` reads the key's `revoked_at` in the
    same round trip as the customers and prices)."""

    def __call__(self, request: HttpRequest) -> ApiKey | None:
        header = request.headers.get(self.header, "")
        if not header:
            raise AuthenticationError(
                message="Missing API key: send the header 'Authorization: Bearer <your API key>'."
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                message="The Authorization header must read 'Bearer <your API key>'."
            )
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        secret_hash = hash_api_secret(token)
        known = KNOWN_KEYS.get(secret_hash)
        if known is not None:
            key = ApiKey.from_db(connection.alias, ApiKey.AUTH_COLUMNS, list(known))
            key.checked = False  # see api_key_of()
        else:
            key = checked_key(ApiKey.for_token(token))
        used = key.last_used_at
        key.touch()  # writes at most once a minute
        if known is None or key.last_used_at != used:
            remember(secret_hash, key)
        return key


# Hash of the secret → ApiKey.AUTH_COLUMNS of a key that was valid when loaded.
# Bounded; a dict's get/set are atomic, so gthread workers may share it.
KNOWN_KEYS: dict[str, tuple] = {}
KNOWN_KEYS_MAX = 1000


def remember(secret_hash: str, key: ApiKey) -> None:
    if len(KNOWN_KEYS) >= KNOWN_KEYS_MAX:
        KNOWN_KEYS.clear()
    KNOWN_KEYS[secret_hash] = tuple(getattr(key, name) for name in ApiKey.AUTH_COLUMNS)


def forget(key: ApiKey) -> None:
    KNOWN_KEYS.pop(key.secret_hash, None)


def checked_key(key: ApiKey | None) -> ApiKey:
    """The key as just read from the database, or the 401 that says why not."""
    if key is None:
        raise AuthenticationError(
            message=f"Invalid API key: no such key. Copy the whole key (it starts with "
            f"'{API_KEY_PREFIX}'); staff create keys in the admin under API keys."
        )
    if key.revoked_at is not None:
        forget(key)
        raise AuthenticationError(
            message=f"This API key ({key.prefix}…) was revoked on "
            f"{key.revoked_at:%Y-%m-%d %H:%M} UTC; ask staff for a new one."
        )
    key.checked = True
    return key


router = Router(auth=ApiKeyAuth())


def api_key_of(request: HttpRequest, *, checked_by_view: bool = False) -> ApiKey:
    """The request's API key, checked against the database now (one indexed read)
    if it came from the per-process memory, unless the view's own statement
    checks it (`checked_by_view`: the usage lookup does)."""
    key = request.auth  # type: ignore[attr-defined]
    assert isinstance(key, ApiKey)
    if not key.checked and not checked_by_view:
        fresh = checked_key(ApiKey.objects.filter(pk=key.pk).only(*ApiKey.AUTH_COLUMNS).first())
        request.auth = key = fresh  # type: ignore[attr-defined]
    return key
