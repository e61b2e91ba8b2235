"""The expiry sweep: every due grant expired in set-based batches, on one or several
connections (`expire_grant` in grants.py expires one grant; the two share a key)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, partial
from itertools import chain
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone

from jobs.parallel import Parallel
from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    ZERO,
    CreditGrant,
)

SQL_QUERIES = Path(__file__).resolve().parent.parent / "sql" / "queries"

EXPIRY_JOB_ACTOR = Actor.job("expire_grants")
# Grants that can still expire (the same statuses as in wallets/sql/queries/expire_*.sql).
LIVE_STATUSES = ["active", "exhausted", "pending"]

# The sweep's two statements (wallets/sql/queries/): select the next due grants and
# lock their wallets in id order, then book them all in one statement.
EXPIRY_SELECT_SQL = (SQL_QUERIES / "expire_select.sql").read_text()
EXPIRY_BOOK_SQL = (SQL_QUERIES / "expire_book.sql").read_text()


@dataclass(frozen=True)
class ExpiryBatch:
    """One batch of the expiry sweep, committed."""

    selected: int  # due grants the batch looked at
    expired: int  # expiry transactions booked
    breakage: Decimal  # credit moved to breakage
    cursor: tuple[datetime, int] | None  # (expires_at, id) of the last grant looked at
    errors: tuple[str, ...] = ()

    @property
    def processed(self) -> int:
        return self.expired

    @property
    def failed(self) -> int:
        return len(self.errors)


def _expiry_select_sql(partition: tuple[int, int] | None) -> str:
    """The select-and-lock statement, for the wallets of one partition: `(k, n)` takes
    the grants of wallets whose id is k modulo n (literals, not parameters: each
    partition's statement is planned for its own constants)."""
    if partition is None or partition[1] == 1:
        return EXPIRY_SELECT_SQL
    part, parts = partition
    if not 0 <= part < parts:
        raise errors.WalletError(f"partition {part} of {parts} does not exist.")
    return EXPIRY_SELECT_SQL.replace(
        "/*partition*/", f"AND wallet_id %% {int(parts)} = {int(part)}"
    )


def expire_due_grants(
    *,
    at: datetime | None = None,
    limit: int = 1000,
    after: tuple[datetime, int] | None = None,
    actor: Actor = EXPIRY_JOB_ACTOR,
    partition: tuple[int, int] | None = None,
) -> ExpiryBatch:
    """Expire up to `limit` grants whose expiry date has passed (by `at`), after the
    cursor `after`, in one transaction: each grant's remainder is booked to breakage
    and the wallet balance drops, as `expire_grant` does one grant at a time.

    A grant is expired exactly once whichever path runs first: the sweep books under
    the key `expire_grant` uses (`expire:grant:<id>`) and skips a grant that already
    has it. The transaction's effective time is the grant's expiry date, so a sweep
    that runs late, or is killed and rerun, books the same ledger as a punctual one.
    Wallets are locked in id order, like every other multi-wallet write.

    `partition=(k, n)` looks only at grants of wallets whose id is k modulo n (the
    cursor then walks that partition): n connections sweeping the n partitions at
    once never lock the same wallet."""
    at = at or timezone.now()
    if limit <= 0:
        raise errors.WalletError("limit must be positive.")
    after_at, after_id = after or (datetime.min.replace(tzinfo=UTC), 0)
    with transaction.atomic(durable=True), connection.cursor() as db:
        # A batch costs milliseconds; JIT-compiling its statements would cost more.
        # `wallets.now`: when this batch moves the money, for the warning trigger.
        db.execute(
            "SELECT set_config('jit', 'off', true), set_config('wallets.now', %s, true)",
            [timezone.now().isoformat()],
        )
        db.execute(
            _expiry_select_sql(partition),
            {"at": at, "after_at": after_at, "after_id": after_id, "limit": limit},
        )
        selected = db.fetchone()
        assert selected is not None  # an aggregate always returns one row
        ids, last_expiry, _ = selected
        if not ids:
            return ExpiryBatch(selected=0, expired=0, breakage=ZERO, cursor=None)
        db.execute(
            EXPIRY_BOOK_SQL,
            {
                "ids": ids,
                "at": at,
                "now": timezone.now(),
                "actor": actor.label,
                "tx_sequence": _tx_sequence(),
            },
        )
        row = db.fetchone()
        assert row is not None  # an aggregate always returns one row
        expired, breakage, booked = row
        problems: tuple[str, ...] = ()
        if expired < len(ids):
            problems = _expiry_leftovers(set(ids) - set(booked), at)
    return ExpiryBatch(
        selected=len(ids), expired=expired, breakage=Decimal(breakage),
        cursor=(last_expiry, ids[-1]), errors=problems,
    )  # fmt: skip


@cache
def _tx_sequence() -> str:
    """The sequence behind LedgerTransaction ids: the sweep draws them itself, so the
    transactions of one wallet get ids in the order their balances run."""
    with connection.cursor() as db:
        db.execute("SELECT pg_get_serial_sequence('wallets_ledgertransaction', 'id')")
        row = db.fetchone()
    assert row is not None and row[0], "wallets_ledgertransaction.id has no sequence"
    return row[0]


def _expiry_leftovers(ids: set[int], at: datetime) -> tuple[str, ...]:
    """Grants the batch selected but did not expire. Voided or expired meanwhile is
    fine; a live grant that already has an expiry transaction is a ledger problem."""
    stuck = CreditGrant.objects.filter(pk__in=ids, status__in=LIVE_STATUSES, expires_at__lte=at)
    return tuple(
        f"grant {grant.pk} is {grant.status} but its expiry key expire:grant:{grant.pk} is "
        "already booked; run check_ledger."
        for grant in stuck.order_by("pk")
    )


def expire_due_grant_batches(
    *, batch_size: int = 1000, at: datetime | None = None, connections: int = 1
) -> Iterator[ExpiryBatch]:
    """The whole sweep, batch by batch (each committed before it is yielded). Grants
    that fall due while it runs wait for the next run.

    With `connections` > 1 the due grants are split by wallet (id modulo n) into n
    partitions, each swept by its own loop in its own thread on its own database
    connection (`jobs.parallel.Parallel`); their batches come out as they commit.
    No two partitions share a wallet, so they never wait for each other's locks
    and cannot deadlock. Inside a transaction of the caller's (tests), other
    connections could not see its rows: the partitions then run one after the
    other on the caller's connection."""
    at = at or timezone.now()
    if connections <= 1:
        return _expiry_partition_batches(batch_size=batch_size, at=at, partition=None)
    parts = [
        partial(_expiry_partition_batches, batch_size=batch_size, at=at, partition=(k, connections))
        for k in range(connections)
    ]
    if connection.in_atomic_block:
        return chain.from_iterable(part() for part in parts)
    return Parallel(parts, name="expire-grants")


def _expiry_partition_batches(
    *, batch_size: int, at: datetime, partition: tuple[int, int] | None
) -> Iterator[ExpiryBatch]:
    cursor: tuple[datetime, int] | None = None
    while True:
        batch = expire_due_grants(at=at, limit=batch_size, after=cursor, partition=partition)
        if batch.selected == 0:
            return
        yield batch
        cursor = batch.cursor
