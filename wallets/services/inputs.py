"""Validation and idempotency helpers of the ledger services (`wallets.services`,
`wallets.services.drawdown`): amounts, dimensions, idempotency keys, request fingerprints,
and "book once per key". Private to the wallets app."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from django.db import IntegrityError, transaction

from wallets import errors
from wallets.models import MONEY_PLACES, LedgerTransaction

QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)  # 0.000001
MAX_AMOUNT = Decimal("1e15")
IDEMPOTENCY_CONSTRAINT = "wallets_ledgertransaction_idempotency_key_key"


# --- validation ------------------------------------------------------------------


def _money(value: Any, *, what: str = "amount") -> Decimal:
    """A positive Decimal with at most 6 decimal places, or a clear error."""
    if isinstance(value, float):
        raise errors.InvalidAmount(
            f"{what} must be a Decimal or a string, not a float ({value!r})."
        )
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise errors.InvalidAmount(f"{what} must be a number, got {value!r}.") from None
    if not amount.is_finite():
        raise errors.InvalidAmount(f"{what} must be a finite number, got {value!r}.")
    if amount <= 0:
        raise errors.InvalidAmount(f"{what} must be greater than zero, got {amount}.")
    if amount != amount.quantize(QUANTUM):
        raise errors.InvalidAmount(
            f"{what} has more than {MONEY_PLACES} decimal places ({amount}); round it first."
        )
    if amount >= MAX_AMOUNT:
        raise errors.InvalidAmount(f"{what} is too large ({amount}).")
    return amount.quantize(QUANTUM)


def _dimensions(value: dict | None) -> dict[str, str]:
    """Dimension values are compared as strings: {"region": "eu", "tier": "2"}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.WalletError("dimensions must be a mapping of name to value.")
    clean: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise errors.WalletError("dimension names must be non-empty strings.")
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise errors.WalletError(
                f"dimension {key!r} must be a string or an integer, got {type(item).__name__}."
            )
        clean[key] = str(item)
    return clean


def _key(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise errors.WalletError("idempotency_key must be a non-empty string.")
    if len(value) > 255:
        raise errors.WalletError("idempotency_key must be at most 255 characters.")
    return value


# json.dumps(..., sort_keys=True, default=str) without building an encoder per call
_HASH_JSON = json.JSONEncoder(sort_keys=True, default=str)


def _request_hash(operation: str, /, **fields: Any) -> str:
    """Fingerprint of a request: the same key with another fingerprint is a conflict.
    Every argument that shapes what is booked goes in (times through `_instant`), so
    a key repeated with any other argument is a conflict, never a silent replay.
    Stored with every transaction: a new field changes the fingerprint of every
    request of that operation (a retry across that upgrade answers 409)."""
    payload = _HASH_JSON.encode([operation, fields])
    return hashlib.sha256(payload.encode()).hexdigest()


def _instant(value: datetime | None) -> str | None:
    """A time argument as it enters a fingerprint: the instant (UTC), so the same
    moment written in another time zone is the same request."""
    return None if value is None else value.astimezone(UTC).isoformat()


def _usage_request_hash(
    wallet_id: int,
    amount: Decimal,
    item_id: int | None,
    dims: dict[str, str],
    reference: str,
    *,
    at: datetime | None = None,
    memo: str = "",
    metadata: dict | None = None,
) -> str:
    """A usage charge's fingerprint (draw_down and draw_down_batch alike). Every
    argument that shapes the booking is in it (the event time as given: None = now)."""
    return _request_hash(
        "usage", wallet=wallet_id, amount=amount, item=item_id, dims=dims, reference=reference,
        at=_instant(at), memo=memo, metadata=metadata or {},
    )  # fmt: skip


# --- idempotency ------------------------------------------------------------------

T = TypeVar("T")


def _is_idempotency_violation(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None) == IDEMPOTENCY_CONSTRAINT


def _existing(key: str, request_hash: str) -> LedgerTransaction | None:
    """The transaction an earlier call with this key booked, if any."""
    earlier = LedgerTransaction.objects.filter(idempotency_key=key).first()
    if earlier is not None and earlier.request_hash != request_hash:
        raise errors.IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different request "
            f"({earlier.get_kind_display()} #{earlier.pk}); use a new key."
        )
    return earlier


def _once(
    key: str, request_hash: str, book: Callable[[], T], replay: Callable[[LedgerTransaction], T]
) -> T:
    """Run `book` in one transaction unless `key` was seen. Two callers racing with
    the same key on different wallets meet at the unique index: the loser rolls
    back and returns the winner's result."""
    try:
        with transaction.atomic():
            return book()
    except IntegrityError as exc:
        if not _is_idempotency_violation(exc):
            raise
    earlier = _existing(key, request_hash)
    assert earlier is not None
    return replay(earlier)
