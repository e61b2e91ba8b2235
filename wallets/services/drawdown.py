"""The draw-down: usage charged to a wallet in real time, one event (`draw_down`,
one round trip) or a batch on one wallet (`draw_down_batch`, one lock and one round
trip). The booking itself is SQL (wallets/sql/wallets_draw_down_one.sql and
wallets_draw_down.sql); this module validates, fingerprints and reads the answer
rows. `draw_order` and `_take` are the same order for the services that spend
credit in Python (debt settlement, transfers)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    ZERO,
    CreditGrant,
    LedgerTransaction,
    Wallet,
)
from wallets.services.inputs import (
    _dimensions,
    _is_idempotency_violation,
    _key,
    _money,
    _usage_request_hash,
)
from wallets.services.posting import NEVER


def draw_order(grant: CreditGrant) -> tuple:
    """The draw-down order (ARCHITECTURE.md): most specific condition first, then
    lower priority, then earliest expiry (none last), then free before paid, then
    oldest. Its home is SQL `wallets_usable_grants` (wallets/sql/), which every
    draw-down uses; this Python twin orders the credit the Python services spend
    (debt settlement, transfers), pinned by tests/wallets/test_rules_differential.py."""
    return (
        -grant.specificity,
        grant.priority,
        grant.expires_at or NEVER,
        grant.kind != CreditGrant.Kind.FREE,
        grant.pk,
    )


def _unrestricted_grants(wallet: Wallet, at: datetime) -> list[CreditGrant]:
    """The spendable credit at `at` (`Wallet.spendable_credit`), in draw-down order:
    what `wallets_usable_grants` returns for an event that no condition matches."""
    grants = CreditGrant.objects.in_force(at).filter(
        wallet=wallet, remaining__gt=0, restricted=False
    )
    return sorted(grants, key=draw_order)


def _take(grants: list[CreditGrant], amount: Decimal) -> dict[CreditGrant, Decimal]:
    taken: dict[CreditGrant, Decimal] = {}
    left = amount
    for grant in grants:
        if left <= 0:
            break
        part = min(grant.remaining, left)
        taken[grant] = part
        left -= part
    return taken


@dataclass(frozen=True)
class DrawDown:
    """What one usage draw-down did."""

    transaction_id: int
    amount: Decimal
    from_credits: Decimal
    to_debt: Decimal
    lots: tuple[tuple[int, Decimal], ...]  # (grant id, amount drawn)
    balance_after: Decimal
    debt_after: Decimal
    replayed: bool = False
    # The wallet right after this draw-down (None on a replay): its restricted
    # credit, its effective credit limit and `Wallet.available_funds` at the time of
    # the call (credit not yet effective, or expired but not swept, not counted).
    restricted_after: Decimal | None = None
    credit_limit: Decimal | None = None
    available_after: Decimal | None = None


@dataclass(frozen=True)
class UsageCharge:
    """One event of a batch: charge `amount` for `item_id`/`dimensions` at `at`."""

    amount: Decimal | str | int
    idempotency_key: str
    item_id: int | None = None
    dimensions: dict | None = None
    at: datetime | None = None
    memo: str = ""
    reference: str = ""
    metadata: dict | None = None


# One call books a whole batch for one wallet: wallets/sql/wallets_draw_down.sql.
DRAW_DOWN_CALL = "SELECT * FROM wallets_draw_down(%(wallet_id)s, %(events)s::jsonb, %(actor)s, %(actor_user_id)s, %(now)s)"


# One event: the same booking as a batch of one, with plain arguments and one answer
# row (wallets/sql/wallets_draw_down_one.sql). The casts pin one function
# signature, so psycopg prepares it once per connection whatever Python types come in.
DRAW_DOWN_ONE_CALL = (
    "SELECT * FROM wallets_draw_down_one(%s::bigint, %s::numeric, %s::bigint, %s::jsonb,"
    " %s::timestamptz, %s::text, %s::text, %s::text, %s::text, %s::jsonb, %s::text,"
    " %s::integer, %s::timestamptz)"
)


def draw_down(
    *,
    wallet: Wallet | int,
    amount: Decimal | str | int,
    actor: Actor,
    idempotency_key: str,
    item_id: int | None = None,
    dimensions: dict | None = None,
    at: datetime | None = None,
    memo: str = "",
    reference: str = "",
    metadata: dict | None = None,
    savepoint: bool = True,
) -> DrawDown:
    """Charge `amount` of usage to the wallet in real time.

    Grants that apply to the item and dimensions are drawn in draw-down order
    (`draw_order`); what they cannot cover becomes debt while the credit limit
    allows it. Otherwise `InsufficientFunds` is raised and nothing is booked. The
    same key again returns the first answer. One round trip to PostgreSQL.

    The hot path: it does exactly what `draw_down_batch` does for one charge (same
    validation, request fingerprint, SQL booking and answer), minus the batch's
    bookkeeping and JSON packing.

    Inside a transaction the call runs in a savepoint, so that a key racing in from
    another wallet can be answered as a replay. `savepoint=False` saves those two
    round trips for a caller that owns the transaction and retries it whole: the
    `IntegrityError` is then raised and the transaction is spoiled."""
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    value = _money(amount)
    key = _key(idempotency_key)
    dims = _dimensions(dimensions)
    now = timezone.now()
    request_hash = _usage_request_hash(
        wallet_id, value, item_id, dims, reference, at=at, memo=memo, metadata=metadata
    )
    params = (wallet_id, value, item_id, _jsonb_text(dims), at or now, key, request_hash,
              memo[:500], reference, _jsonb_text(metadata), actor.label, actor.user_id, now)  # fmt: skip
    try:
        row = _call_prepared(DRAW_DOWN_ONE_CALL, params, savepoint=savepoint)
    except IntegrityError as exc:
        # The key raced in from a call on another wallet: answer as its replay.
        if not _is_idempotency_violation(exc) or not savepoint:
            raise
        earlier = LedgerTransaction.objects.get(idempotency_key=key)
        row = (0, "replay", earlier.pk, None, None, None, None, None, None, earlier.request_hash,
               None, None, None)  # fmt: skip
    if row[1] == "ok":  # the common case, straight from the row
        return _booked_draw_down(row, value)
    charge = UsageCharge(amount=value, idempotency_key=key)  # names the key in errors
    result = _draw_down_outcome(row, charge, (request_hash, value))
    if isinstance(result, errors.WalletError):
        raise result
    return result


def _jsonb_text(value: dict | None) -> str:
    """A jsonb argument as text (the SQL casts it): cheaper than a Jsonb wrapper."""
    return json.dumps(value) if value else "{}"


def _call_prepared(sql: str, params: tuple, *, savepoint: bool = True) -> tuple:
    """One prepared statement that returns one row. Outside a transaction the call
    is its own transaction (no BEGIN/COMMIT round trips); inside one, a savepoint
    keeps a failed call from spoiling the caller's (unless `savepoint` is False)."""
    in_savepoint = savepoint and connection.in_atomic_block
    with transaction.atomic() if in_savepoint else contextlib.nullcontext():
        with _prepared_cursor() as cursor:
            cursor.execute(sql, params, prepare=True)
            row = cursor.fetchone()
    assert row is not None  # the function always answers one row
    return row


def draw_down_batch(
    *, wallet: Wallet | int, charges: list[UsageCharge], actor: Actor, savepoint: bool = True
) -> list[DrawDown | errors.WalletError]:
    """Book many usage charges on one wallet with one lock and one round trip.

    Returns, in order, a `DrawDown` per booked (or replayed) charge and the error
    for each refused one (`InsufficientFunds`, `IdempotencyConflict`, bad input):
    every charge stands alone, as if sent separately in that order. A batch of
    alike charges that the grants pay in full is booked set-based (the fast path in wallets/sql/wallets_draw_down.sql).

    Inside a transaction the call runs in a savepoint, so that a key racing in
    from another wallet can be retried charge by charge. `savepoint=False` saves
    those two round trips for a caller that owns the transaction and retries it
    whole: the `IntegrityError` is then raised and the transaction is spoiled."""
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    results: list[DrawDown | errors.WalletError | None] = [None] * len(charges)
    events: list[dict[str, Any]] = []
    hashes: dict[int, tuple[str, Decimal]] = {}
    now = timezone.now()
    for ord_, charge in enumerate(charges):
        try:
            event = _usage_event(wallet_id, charge, now)
        except errors.WalletError as exc:
            results[ord_] = exc
            continue
        event["ord"] = ord_
        hashes[ord_] = (event["request_hash"], Decimal(event["amount"]))
        events.append(event)
    if events:
        try:
            rows = _call_draw_down(wallet_id, events, actor, now, savepoint=savepoint)
        except IntegrityError as exc:
            # A key raced in from a call on another wallet: book one by one instead;
            # a charge that loses its race answers like a replay of the winner.
            if not _is_idempotency_violation(exc) or not savepoint:
                raise
            rows = [
                row
                for event in events
                for row in _call_draw_down_or_replay(wallet_id, event, actor, now)
            ]
        for row in rows:
            results[row[0]] = _draw_down_outcome(row, charges[row[0]], hashes[row[0]])
    return [r if r is not None else errors.WalletError("not processed") for r in results]


def _usage_event(wallet_id: int, charge: UsageCharge, now: datetime) -> dict[str, Any]:
    amount = _money(charge.amount)
    key = _key(charge.idempotency_key)
    dims = _dimensions(charge.dimensions)
    request_hash = _usage_request_hash(
        wallet_id, amount, charge.item_id, dims, charge.reference,
        at=charge.at, memo=charge.memo, metadata=charge.metadata,
    )  # fmt: skip
    return {
        "amount": str(amount), "item_id": charge.item_id, "dimensions": dims,
        "at": (charge.at or now).isoformat(), "key": key, "request_hash": request_hash,
        "memo": charge.memo[:500], "reference": charge.reference, "metadata": charge.metadata or {},
    }  # fmt: skip


def _call_draw_down(
    wallet_id: int, events: list[dict], actor: Actor, now: datetime, *, savepoint: bool = True
) -> list[tuple]:
    params = {"wallet_id": wallet_id, "events": json.dumps(events), "actor": actor.label,
              "actor_user_id": actor.user_id, "now": now}  # fmt: skip
    # Outside a transaction the call is its own transaction (no BEGIN/COMMIT round
    # trips); inside one, a savepoint keeps a failed call from spoiling the caller's.
    in_savepoint = savepoint and connection.in_atomic_block
    with transaction.atomic() if in_savepoint else contextlib.nullcontext():
        with _prepared_cursor() as cursor:
            cursor.execute(DRAW_DOWN_CALL, params, prepare=True)
            return cursor.fetchall()


def _call_draw_down_or_replay(
    wallet_id: int, event: dict, actor: Actor, now: datetime
) -> list[tuple]:
    try:
        return _call_draw_down(wallet_id, [event], actor, now)
    except IntegrityError as exc:
        if not _is_idempotency_violation(exc):
            raise
    earlier = LedgerTransaction.objects.get(idempotency_key=event["key"])
    return [
        (
            event["ord"],
            "replay",
            earlier.pk,
            None,
            None,
            None,
            None,
            None,
            None,
            earlier.request_hash,
            None,
            None,
            None,
        )
    ]


def _draw_down_outcome(
    row: tuple, charge: UsageCharge, sent: tuple[str, Decimal]
) -> DrawDown | errors.WalletError:
    (ord_, outcome, tx_id, covered, balance_after, debt_after, lots, room, currency,
     earlier_hash, restricted_after, credit_limit, _) = row  # fmt: skip
    request_hash, amount = sent  # as validated and sent
    if outcome == "no_wallet":
        return errors.WalletNotFound("wallet does not exist.")
    if outcome == "replay":
        if earlier_hash != request_hash:
            return errors.IdempotencyConflict(
                f"idempotency key {charge.idempotency_key!r} was already used for a different "
                f"request (transaction #{tx_id}); use a new key."
            )
        return _draw_down_result(tx_id, replayed=True)
    if outcome == "insufficient":
        return errors.InsufficientFunds(
            f"insufficient funds: this usage costs {amount} {currency} but the wallet can cover "
            f"{covered + room} {currency} (credits that apply {covered}, credit limit room {room}). "
            "Top up or raise the credit limit.",
            needed=amount,
            available=covered + room,
        )
    return _booked_draw_down(row, amount)


def _booked_draw_down(row: tuple, amount: Decimal) -> DrawDown:
    """The answer for a row with outcome "ok"."""
    (_, _, tx_id, covered, balance_after, debt_after, lots, _, _, _, restricted_after,
     credit_limit, available_after) = row  # fmt: skip
    return DrawDown(
        transaction_id=tx_id,
        amount=amount,
        from_credits=covered,
        to_debt=amount - covered,
        lots=tuple((grant_id, Decimal(take)) for grant_id, take in lots or ()),
        balance_after=balance_after,
        debt_after=debt_after,
        restricted_after=restricted_after,
        credit_limit=credit_limit,
        available_after=available_after,
    )


@contextmanager
def _prepared_cursor() -> Iterator[psycopg.Cursor]:
    """A server-side-binding cursor on Django's own connection (so inside its
    transaction, if any), for statements worth preparing once per connection.
    Behind PgBouncer in transaction mode this needs PgBouncer ≥ 1.21 with
    max_prepared_statements set."""
    connection.ensure_connection()
    # wrap_database_errors: psycopg's errors become Django's (IntegrityError, ...)
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def _draw_down_result(tx_id: int, *, replayed: bool) -> DrawDown:
    tx = LedgerTransaction.objects.get(pk=tx_id)
    lots = tuple(tx.lots.order_by("id").values_list("grant_id", "amount"))
    covered = sum((amount for _, amount in lots), ZERO)
    return DrawDown(
        transaction_id=tx.pk,
        amount=tx.amount,
        from_credits=covered,
        to_debt=tx.amount - covered,
        lots=lots,
        balance_after=tx.balance_after or ZERO,
        debt_after=tx.debt_after or ZERO,
        replayed=replayed,
    )
