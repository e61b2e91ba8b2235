"""Draw-downs per second through `wallets.services.draw_down`, against the floor:
the same effect as ONE SQL statement sent with a prepared statement over plain
psycopg, at the same concurrency, measured in the same run.

Run it with `make bench` (throwaway PostgreSQL + Redis) or, against the servers of
`make run`, `.venv/bin/python bench/drawdown.py`. It needs DATABASE_URL.

Seeding: 1,000 wallets with one large grant each and 200 historical usage
transactions per wallet (200,000 transactions, 200,000 entries, 200,000 lots), so
the planner sees realistic statistics. `check_ledger` runs at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

WALLETS = 1000
HISTORY_PER_WALLET = 200
AMOUNT = Decimal("0.01")

# The floor: lock, pick grants, insert transaction + entries + lots, update grants
# and wallet, all in one statement (autocommit: one round trip per draw-down).
RAW_SQL = """
WITH w AS (
    SELECT id, credit_balance, restricted_balance, debt, receivable_account_id, currency
    FROM wallets_wallet WHERE id = %(wallet_id)s FOR UPDATE
),
usable AS (
    SELECT g.id, g.account_id, g.remaining, g.restricted,
           SUM(g.remaining) OVER draw_order - g.remaining AS before
    FROM wallets_creditgrant g
    WHERE g.wallet_id = (SELECT id FROM w) AND g.status = 'active' AND g.remaining > 0
      AND g.effective_at <= now() AND (g.expires_at IS NULL OR g.expires_at > now())
      AND g.condition_item_id IS NULL AND g.condition_dimensions <@ '{}'::jsonb
    WINDOW draw_order AS (
        ORDER BY g.specificity DESC, g.priority, g.expires_at NULLS LAST, g.kind <> 'free', g.id
        ROWS UNBOUNDED PRECEDING)
),
takes AS (
    SELECT id, account_id, restricted, LEAST(remaining, %(amount)s - before) AS take
    FROM usable WHERE before < %(amount)s
),
decision AS (SELECT COALESCE(SUM(take), 0) AS covered FROM takes),
tx AS (
    INSERT INTO wallets_ledgertransaction
        (kind, wallet_id, idempotency_key, request_hash, effective_at, created_at, actor,
         memo, reference, amount, currency, balance_after, restricted_after, debt_after, metadata)
    SELECT 'usage', w.id, %(key)s, '', now(), now(), 'bench', '', '', %(amount)s, w.currency,
           w.credit_balance - d.covered, w.restricted_balance, w.debt, '{}'::jsonb
    FROM w, decision d WHERE d.covered = %(amount)s
    RETURNING id, balance_after
),
entries AS (
    INSERT INTO wallets_entry (transaction_id, debit_account_id, credit_account_id, amount, currency)
    SELECT tx.id, t.account_id, %(revenue_id)s, t.take, 'USD' FROM tx, takes t
),
lots AS (
    INSERT INTO wallets_grantconsumption (transaction_id, grant_id, amount)
    SELECT tx.id, t.id, t.take FROM tx, takes t
),
grant_update AS (
    UPDATE wallets_creditgrant g SET remaining = g.remaining - t.take
    FROM tx, takes t WHERE g.id = t.id
)
UPDATE wallets_wallet SET credit_balance = tx.balance_after FROM tx
WHERE wallets_wallet.id = %(wallet_id)s
"""


def setup_django() -> None:
    import django

    django.setup()


def seed() -> tuple[list[int], int]:
    """Wallets with history; returns (wallet ids, usage revenue account id)."""
    from django.db import connection, transaction

    from billing.models import Customer, Partner
    from wallets import services
    from wallets.actors import Actor
    from wallets.models import Account, Wallet

    existing = list(
        Wallet.objects.filter(customer__name__startswith="bench-").values_list("id", flat=True)
    )
    if len(existing) >= WALLETS:
        revenue = Account.objects.get(kind="system", code="usage_revenue", currency="USD")
        return existing[:WALLETS], revenue.pk
    started = time.perf_counter()
    partner, _ = Partner.objects.get_or_create(name="bench")
    customers = Customer.objects.bulk_create(
        Customer(account_number=f"BENCH{i:05d}", name=f"bench-{i}", partner=partner, currency="USD")
        for i in range(WALLETS)
    )
    actor = Actor.system("bench")
    wallets = []
    for customer in customers:
        wallet = services.open_wallet(customer=customer)
        services.grant_credit(wallet=wallet, amount=Decimal("1000000"), kind="paid", name="bench",
                              actor=actor, idempotency_key=f"bench-seed-{customer.pk}")  # fmt: skip
        wallets.append(wallet.pk)
    revenue = Account.objects.get(kind="system", code="usage_revenue", currency="USD")
    # History: set-based, consistent with the balances (check_ledger proves it).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            WITH h AS (
                INSERT INTO wallets_ledgertransaction
                    (kind, wallet_id, idempotency_key, request_hash, effective_at, created_at, actor,
                     memo, reference, amount, currency, metadata)
                SELECT 'usage', w.id, 'bench-history-' || w.id || '-' || n, '',
                       now() - make_interval(hours => n), now() - make_interval(hours => n),
                       'bench', '', '', 0.05, 'USD', '{}'::jsonb
                FROM wallets_wallet w CROSS JOIN generate_series(1, %(per)s) n
                WHERE w.id = ANY(%(wallets)s)
                RETURNING id, wallet_id
            ), e AS (
                INSERT INTO wallets_entry (transaction_id, debit_account_id, credit_account_id, amount, currency)
                SELECT h.id, g.account_id, %(revenue)s, 0.05, 'USD'
                FROM h JOIN wallets_creditgrant g ON g.wallet_id = h.wallet_id
                RETURNING transaction_id
            )
            INSERT INTO wallets_grantconsumption (transaction_id, grant_id, amount)
            SELECT h.id, g.id, 0.05 FROM h JOIN wallets_creditgrant g ON g.wallet_id = h.wallet_id
            """,
            {"per": HISTORY_PER_WALLET, "wallets": wallets, "revenue": revenue.pk},
        )
        # Each history row's balance after it, in id order (what check_ledger recomputes).
        cursor.execute(
            """
            UPDATE wallets_ledgertransaction t
            SET balance_after = 1000000 - 0.05 * h.n, restricted_after = 0, debt_after = 0
            FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY wallet_id ORDER BY id) AS n
                  FROM wallets_ledgertransaction
                  WHERE wallet_id = ANY(%(wallets)s) AND idempotency_key LIKE 'bench-history-%%') h
            WHERE t.id = h.id
            """,
            {"wallets": wallets},
        )
        spent = Decimal("0.05") * HISTORY_PER_WALLET
        cursor.execute(
            "UPDATE wallets_creditgrant SET remaining = remaining - %s WHERE wallet_id = ANY(%s)",
            [spent, wallets],
        )
        cursor.execute(
            "UPDATE wallets_wallet SET credit_balance = credit_balance - %s WHERE id = ANY(%s)",
            [spent, wallets],
        )
        cursor.execute("ANALYZE")
    print(f"seeded {WALLETS} wallets and {WALLETS * HISTORY_PER_WALLET:,} history rows "
          f"in {time.perf_counter() - started:.1f}s")  # fmt: skip
    return wallets, revenue.pk


def service_worker(args: tuple) -> int:
    wallet_ids, seconds, hot, seed_n, start_at = args
    setup_django()
    import random

    from django.db import connection

    from wallets import services
    from wallets.actors import Actor

    actor = Actor.system("bench")
    rng = random.Random(seed_n)
    prefix = uuid.uuid4().hex[:10]
    connection.ensure_connection()
    while time.time() < start_at:
        time.sleep(0.001)
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        wallet = wallet_ids[0] if hot else rng.choice(wallet_ids)
        services.draw_down(
            wallet=wallet, amount=AMOUNT, actor=actor, idempotency_key=f"b{prefix}{done}"
        )
        done += 1
    connection.close()
    return done


def raw_worker(args: tuple) -> int:
    wallet_ids, seconds, hot, seed_n, start_at, url, revenue_id = args
    import random

    import psycopg

    rng = random.Random(seed_n)
    prefix = uuid.uuid4().hex[:10]
    with psycopg.connect(url, autocommit=True) as conn:
        while time.time() < start_at:
            time.sleep(0.001)
        done, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            wallet = wallet_ids[0] if hot else rng.choice(wallet_ids)
            conn.execute(RAW_SQL, {"wallet_id": wallet, "amount": AMOUNT, "key": f"r{prefix}{done}",
                                   "revenue_id": revenue_id}, prepare=True)  # fmt: skip
            done += 1
    return done


def measure(
    kind: str, procs: int, hot: bool, wallet_ids: list[int], seconds: float, url: str, revenue: int
) -> float:
    start_at = time.time() + 1.5  # every process connected and waiting before the clock starts
    if kind == "service":
        jobs = [(wallet_ids, seconds, hot, n, start_at) for n in range(procs)]
        worker = service_worker
    else:
        jobs = [(wallet_ids, seconds, hot, n, start_at, url, revenue) for n in range(procs)]
        worker = raw_worker
    with mp.get_context("spawn").Pool(procs) as pool:
        counts = pool.map(worker, jobs)
    return sum(counts) / seconds


def psycopg_url() -> str:
    from django.db import connection

    params = connection.get_connection_params()
    host = params.get("host", "")
    return f"postgresql://{params.get('user', 'postgres')}@/{params['dbname']}?host={host}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternate service/raw this many times; report medians",
    )
    parser.add_argument("--procs", default="1,2,4")
    args = parser.parse_args()
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    wallet_ids, revenue = seed()
    url = psycopg_url()
    rows = []
    for hot in (False, True):
        for procs in [int(p) for p in args.procs.split(",")]:
            service, raw = [], []
            for _ in range(args.rounds):
                raw.append(measure("raw", procs, hot, wallet_ids, args.seconds, url, revenue))
                service.append(
                    measure("service", procs, hot, wallet_ids, args.seconds, url, revenue)
                )
            s, r = statistics.median(service), statistics.median(raw)
            rows.append(("hot wallet" if hot else "random wallets", procs, s, r, s / r))
            print(f"{rows[-1][0]:>15} {procs} procs: service {s:8.0f}/s  raw SQL {r:8.0f}/s  ratio {s / r:.2f}",
                  flush=True)  # fmt: skip
    print()
    print("| wallets | processes | service draw-downs/s | raw single-statement/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, procs, s, r, ratio in rows:
        print(f"| {name} | {procs} | {s:,.0f} | {r:,.0f} | {ratio:.2f} |")
    call_command("check_ledger")
    return 0


if __name__ == "__main__":
    sys.exit(main())
