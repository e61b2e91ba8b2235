"""Prove every cached balance from the entries, and every ledger invariant.

Each check is one set-based SQL statement over the whole ledger that returns the
rows breaking it (hash joins, aggregates and window functions that PostgreSQL
spills to disk past `work_mem`: memory stays bounded however large the ledger
is, and no Python loop walks the rows). All checks read one snapshot (one
REPEATABLE READ transaction), so a ledger that is being written to while the
check runs is seen as of one instant. `manage.py check_ledger` prints the
findings and exits non-zero; tests call `find_problems()` after every scenario.

What the database itself already guarantees is not checked again: entry amount
> 0 and debit ≠ credit, 0 ≤ remaining ≤ amount, only live grants hold credit,
exhausted means empty, non-negative wallet balances (CHECK constraints), one
transaction per idempotency key and one reversal per transaction (unique
indexes), immutable entries and lots (trigger). docs/ledger-check.md lists each
check, what it catches and the test that corrupts the ledger to prove it does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from wallets.ledger_check.checks import CHECKS, FLOWS, SHOWN_PER_CHECK, Check
from wallets.models import Wallet

__all__ = [
    "CHECKS",
    "CHECK_SETTINGS",
    "FLOWS",
    "SHOWN_PER_CHECK",
    "Check",
    "find_problems",
    "ledger_totals",
    "register_check",
    "wallets_over_limit",
]


def register_check(check: Check) -> None:
    """Apps above the ledger (invoices: payments and allocations) add their own
    invariants, so `check_ledger` proves them too without wallets knowing them."""
    if check.rule not in {c.rule for c in CHECKS}:
        CHECKS.append(check)


def find_problems() -> list[str]:
    """Every broken invariant, one line each: the rule, the offending row(s), what
    was recorded and what the ledger says. Empty when the ledger is sound."""
    problems: list[str] = []
    with _snapshot() as cursor:
        for check in CHECKS:
            # prepared: a test suite that checks after every step plans each once
            cursor.cursor.execute(check.query, prepare=True)
            rows = cursor.fetchall()
            for subject, recorded, expected in rows[:SHOWN_PER_CHECK]:
                problems.append(
                    f"{check.rule}: {subject}: recorded {recorded}, ledger says {expected}"
                )
            if len(rows) > SHOWN_PER_CHECK:
                problems.append(f"{check.rule}: more rows than the {SHOWN_PER_CHECK} shown")
    return problems


# For the checks' statements only: planning a whole-ledger scan is cheap, JIT-
# compiling it is not (and on a small, never analysed ledger the planner's guesses
# would JIT every check); hash aggregates that fit in memory instead of spilling.
# Bounded: a statement uses a few times work_mem at most. No nested loops: every
# check joins whole tables, and on a ledger the planner has not analysed yet (rows
# just written, e.g. 20,000 grants seeded by a test on a server without autovacuum
# runs) it guessed "a few rows" and ran one check as a nested loop for minutes.
CHECK_SETTINGS = {"jit": "off", "work_mem": "64MB", "enable_nestloop": "off"}


@contextmanager
def _snapshot() -> Iterator[CursorWrapper]:
    """A cursor in one REPEATABLE READ, read-only transaction (one snapshot for every
    check), or in the caller's transaction when there is one (tests), with
    CHECK_SETTINGS in force (and the caller's own restored afterwards)."""
    if connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT " + ", ".join(f"current_setting('{name}')" for name in CHECK_SETTINGS)
            )
            before = dict(zip(CHECK_SETTINGS, cursor.fetchone() or (), strict=True))
            _apply(cursor, CHECK_SETTINGS)
            yield cursor
            _apply(cursor, before)
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _apply(cursor, CHECK_SETTINGS)
        yield cursor


def _apply(cursor: CursorWrapper, settings: dict[str, str]) -> None:
    """SET LOCAL each setting (until the end of the transaction)."""
    cursor.execute(
        "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in settings),
        [value for item in settings.items() for value in item],
    )


def wallets_over_limit() -> list[str]:
    """Wallets owing more than their limit allows *now*. Not a ledger error: debt is
    only ever taken on within the limit (draw_down refuses the rest), but a
    temporary increase that lapsed, or a limit change, can leave debt above the
    current limit; such a wallet can draw nothing more until it pays. Reported so
    finance sees them."""
    now = timezone.now()
    over = []
    for wallet in (
        Wallet.objects.filter(debt__gt=0).select_related("customer").iterator(chunk_size=1000)
    ):
        limit = wallet.effective_credit_limit(now)
        if wallet.debt > limit:
            over.append(
                f"wallet {wallet.pk} ({wallet.customer}): debt {wallet.debt}, limit now {limit}"
            )
    return over


def ledger_totals() -> dict[str, Decimal | int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT (SELECT COUNT(*) FROM wallets_ledgertransaction),
                      (SELECT COUNT(*) FROM wallets_entry),
                      (SELECT COUNT(*) FROM wallets_wallet),
                      (SELECT COUNT(*) FROM wallets_creditgrant)"""
        )
        transactions, entries, wallets, grants = cursor.fetchone()
    return {"transactions": transactions, "entries": entries, "wallets": wallets, "grants": grants}
