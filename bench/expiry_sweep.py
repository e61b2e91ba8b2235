"""Expire N due grants with the `expire_grants` job, against the floor: ONE set-based
SQL UPDATE of an identical second set of N grants, measured in the same run.

    .venv/bin/python -m config.devservers run --tmp -- .venv/bin/python bench/expiry_sweep.py

Seeding (tests/wallets/expiry_seed.py, set-based): two identical sets of N grants, 10 per
wallet, each with its account, issuing transaction and funding entry (one in twenty
pending, one in twenty exhausted, one in twenty half used, one in ten restricted).
Set A is due; set B expires in ten years, so the sweep leaves it alone.

1. Floor: `UPDATE wallets_creditgrant SET status = 'expired', remaining = 0 WHERE
   <live> AND <set B>` inside a transaction that is rolled back (so set B's ledger
   stays consistent), then VACUUM ANALYZE.
2. Sweep: the real task (`wallets.tasks.expire_grants`: JobRun, advisory lock,
   batches of the registry's size) over set A: per grant one expiry transaction,
   one breakage entry, the grant update and the wallet balances.
3. check_ledger, and breakage == Σ what set A's grants held.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

FLOOR_SQL = """
UPDATE wallets_creditgrant SET status = 'expired', remaining = 0
WHERE status IN ('active', 'exhausted', 'pending') AND expires_at > %(cutoff)s
"""


# Indexes the ledger schema has twice over (an experiment for --lean-indexes): Django's
# automatic FK indexes next to the explicit entry_debit / entry_credit /
# tx_wallet_recent ones, and the LIKE index a unique CharField gets.
REDUNDANT_SQL = """
SELECT indexname FROM pg_indexes
WHERE (tablename = 'wallets_entry' AND indexname NOT IN ('entry_debit', 'entry_credit')
       AND (indexdef LIKE '%%(debit_account_id)' OR indexdef LIKE '%%(credit_account_id)'))
   OR (tablename = 'wallets_ledgertransaction'
       AND (indexdef LIKE '%%(wallet_id)' OR indexdef LIKE '%%varchar_pattern_ops)'))
"""


def redundant_indexes(cursor) -> list[str]:
    cursor.execute(REDUNDANT_SQL, {})
    return [row[0] for row in cursor.fetchall()]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the registry's")
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="partitions swept at once (default: settings.EXPIRY_SWEEP_CONNECTIONS)",
    )
    parser.add_argument(
        "--lean-indexes",
        action="store_true",
        help="experiment: drop the 4 redundant ledger indexes first (nothing left to drop since wallets 0008)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="wallets take turns: every grant of a batch in a different wallet",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import Sum
    from django.utils import timezone

    from jobs.registry import get
    from tests.wallets.expiry_seed import seed_due_grants
    from wallets import tasks
    from wallets.models import Account, Entry

    call_command("migrate", verbosity=0)
    n = args.grants
    batch = args.batch_size or get("expire_grants").batch_size
    started = time.perf_counter()
    now = timezone.now()
    shape = {"count": n, "interleave": args.interleave}
    due = seed_due_grants(label="sweep", expires_at=now - timedelta(minutes=1), **shape)
    later = seed_due_grants(label="floor", expires_at=now + timedelta(days=3650), **shape)
    with connection.cursor() as cursor:
        if args.lean_indexes:
            for name in redundant_indexes(cursor):
                cursor.execute(f'DROP INDEX "{name}"')
                print(f"dropped redundant index {name}")
        cursor.execute("ANALYZE")
    print(f"seeded 2 x {n:,} grants (+ accounts, transactions, entries) "
          f"in {time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip

    # 1. The floor: one statement, the same number of rows, rolled back.
    with transaction.atomic(), connection.cursor() as cursor:
        t0 = time.perf_counter()
        cursor.execute(FLOOR_SQL, {"cutoff": now + timedelta(days=3000)})
        floor_seconds = time.perf_counter() - t0
        assert cursor.rowcount == later.grants, cursor.rowcount
        transaction.set_rollback(True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE wallets_creditgrant")
    floor_rate = n / floor_seconds
    print(f"floor:  1 UPDATE of {n:,} grants in {floor_seconds:.1f}s = {floor_rate:,.0f} grants/s",
          flush=True)  # fmt: skip

    # 2. The sweep, as beat runs it.
    parts = args.connections or settings.EXPIRY_SWEEP_CONNECTIONS
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = tasks.expire_grants(batch_size=batch, connections=parts)
    sweep_seconds = time.perf_counter() - t0
    assert result["status"] == "succeeded" and result["processed"] == n, result
    sweep_rate = n / sweep_seconds
    print(f"sweep:  {n:,} grants in {result['batches']} batches of {batch:,} on {parts} "
          f"connection(s) in {sweep_seconds:.1f}s = {sweep_rate:,.0f} grants/s "
          f"(one expiry transaction per grant)", flush=True)  # fmt: skip
    print(f"load average (1 min): {load_before:.2f} before the sweep, "
          f"{os.getloadavg()[0]:.2f} after it")  # fmt: skip
    print(f"ratio:  {sweep_rate / floor_rate:.2f} of the single-UPDATE rate (target >= 0.25)")

    # 3. The ledger proves itself.
    t0 = time.perf_counter()
    call_command("check_ledger")
    breakage = Account.objects.get(kind="system", code="breakage", currency="USD")
    booked = Entry.objects.filter(credit_account=breakage).aggregate(t=Sum("amount"))["t"]
    assert booked == due.expected_breakage, (booked, due.expected_breakage)
    print(f"check_ledger: ok in {time.perf_counter() - t0:.0f}s; breakage {booked} = expected")
    print()
    print("| grants | batch | connections | sweep grants/s | single UPDATE grants/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {n:,} | {batch:,} | {parts} | {sweep_rate:,.0f} | {floor_rate:,.0f} | "
          f"{sweep_rate / floor_rate:.2f} |")  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
