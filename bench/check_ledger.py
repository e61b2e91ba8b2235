"""How long `check_ledger` takes on a big ledger, check by check.

    .venv/bin/python -m config.devservers run --tmp -- .venv/bin/python bench/check_ledger.py

Seeds N grants (tests/wallets/expiry_seed.py: 10 per wallet, each with its account, issuing
transaction and funding entry; one in twenty pending, one in twenty exhausted and
one in twenty half used by a usage transaction with its lot), ANALYZE, then times
every check of `wallets.ledger_check` and the whole `manage.py check_ledger`. With
`--sweep` the expiry sweep then expires every grant (one more transaction and
entry per grant) and the check is timed again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def time_checks() -> float:
    from django.core.management import call_command

    from wallets.ledger_check import CHECKS, _snapshot

    with _snapshot() as cursor:  # the settings and snapshot check_ledger uses
        for check in CHECKS:
            began = time.perf_counter()
            cursor.execute(f"SELECT count(*) FROM ({check.sql}) found")
            found = cursor.fetchone()[0]
            print(f"  {time.perf_counter() - began:7.2f} s  {found:>4} found  {check.rule[:70]}")
    began = time.perf_counter()
    call_command("check_ledger")
    whole = time.perf_counter() - began
    print(f"  {whole:7.2f} s  manage.py check_ledger")
    return whole


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--sweep", action="store_true", help="expire them all, check again")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from tests.wallets.expiry_seed import seed_due_grants
    from wallets import services

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    seeded = seed_due_grants(count=args.grants, label="chk")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute(
            "SELECT (SELECT count(*) FROM wallets_ledgertransaction),"
            " (SELECT count(*) FROM wallets_entry), (SELECT count(*) FROM wallets_grantconsumption)"
        )
        transactions, entries, lots = cursor.fetchone()
        cursor.execute("SHOW work_mem")
        work_mem = cursor.fetchone()[0]
    print(
        f"seeded {seeded.grants:,} grants in {len(seeded.wallet_ids):,} wallets: "
        f"{transactions:,} transactions, {entries:,} entries, {lots:,} lots "
        f"({time.perf_counter() - began:.0f} s); work_mem {work_mem}"
    )
    time_checks()
    if args.sweep:
        began = time.perf_counter()
        expired = sum(b.expired for b in services.expire_due_grant_batches(batch_size=5000))
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(f"swept: {expired:,} grants expired ({time.perf_counter() - began:.0f} s)")
        time_checks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
