"""Seed many due credit grants, set-based, with a consistent ledger.

Used by `bench/expiry_sweep.py` (1,000,000 grants) and by the kill test
(`tests/wallets/test_expiry_kill.py`, 20,000). Every grant gets its account, the
`grant` transaction that issued it and its funding entry (cash → grant); one in
twenty is pending (nothing booked), one in twenty exhausted and one in twenty half
used (a usage transaction with its entry and lot); one in ten is restricted to
region=eu. Wallet balances are set from the grants, so `check_ledger` passes.

Customers and wallets go through the ORM's bulk_create (so new model fields keep
their defaults); the big tables are filled by INSERT ... SELECT, taking every
column the statements below do not set from the model field's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

CURRENCY = "USD"


@dataclass(frozen=True)
class Seeded:
    label: str
    wallet_ids: list[int]
    first_grant_id: int
    last_grant_id: int
    grants: int
    expected_breakage: Decimal  # Σ remaining of the live grants


def _insert_select(
    cursor: Any, model: type[models.Model], given: dict[str, str], from_sql: str, params: dict
) -> None:
    """INSERT INTO <model> (...) SELECT <given expressions, defaults> FROM ..."""
    columns, values = [], []
    params = dict(params)
    for field in model._meta.concrete_fields:
        if field.column in given:
            columns.append(field.column)
            values.append(given[field.column])
        elif not field.primary_key:
            name = f"default_{field.column}"
            default = field.get_default()
            params[name] = field.get_db_prep_save(default, connection)
            columns.append(field.column)
            values.append(f"%({name})s")
    cursor.execute(
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} {from_sql}",
        params,
    )


def seed_due_grants(
    *,
    count: int,
    per_wallet: int = 10,
    label: str = "seed",
    expires_at: datetime | None = None,
    interleave: bool = False,
) -> Seeded:
    """`count` grants in `count / per_wallet` new wallets, expiring over the day up to
    `expires_at` in the order they were made (as grants with the default validity
    do). A wallet's grants are made one after the other (grant n is in wallet
    n / per_wallet), or with `interleave` the wallets take turns (wallet n mod
    wallets): then every grant of a batch is in a different wallet."""
    from billing.models import Customer, Partner
    from wallets import services
    from wallets.models import (
        Account,
        CreditGrant,
        Entry,
        GrantConsumption,
        LedgerTransaction,
        Wallet,
    )

    expires_at = expires_at or timezone.now() - timedelta(minutes=1)
    now = timezone.now()
    wallets_needed = -(-count // per_wallet)
    partner, _ = Partner.objects.get_or_create(name=f"seed-{label}")
    for code in Account.Code.values:
        services.system_account(code, CURRENCY)
    cash = services.system_account(Account.Code.CASH, CURRENCY).pk
    revenue = services.system_account(Account.Code.USAGE_REVENUE, CURRENCY).pk

    with transaction.atomic():
        customers = Customer.objects.bulk_create(
            (
                Customer(account_number=f"{label.upper()}-{n:07d}", name=f"{label} {n}",
                         partner=partner, currency=CURRENCY)
                for n in range(wallets_needed)
            ),
            batch_size=5000,
        )  # fmt: skip
        receivables = Account.objects.bulk_create(
            (Account(kind=Account.Kind.RECEIVABLE, currency=CURRENCY) for _ in customers),
            batch_size=5000,
        )
        wallets = Wallet.objects.bulk_create(
            (
                Wallet(customer=c, currency=CURRENCY, receivable_account=r)
                for c, r in zip(customers, receivables, strict=True)
            ),
            batch_size=5000,
        )
        wallet_ids = [w.pk for w in wallets]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE wallets_account a SET wallet_id = w.id FROM wallets_wallet w "
                "WHERE w.receivable_account_id = a.id AND w.id = ANY(%s)",
                [wallet_ids],
            )
            # One row per grant with every id it needs, drawn from the sequences.
            cursor.execute(
                """
                CREATE TEMP TABLE seed_grants ON COMMIT DROP AS
                SELECT n, w.wallet_id,
                       nextval(pg_get_serial_sequence('wallets_account', 'id')) AS account_id,
                       nextval(pg_get_serial_sequence('wallets_creditgrant', 'id')) AS grant_id,
                       nextval(pg_get_serial_sequence('wallets_ledgertransaction', 'id')) AS tx_id,
                       CASE WHEN n %% 20 IN (1, 2)
                            THEN nextval(pg_get_serial_sequence('wallets_ledgertransaction', 'id'))
                       END AS usage_tx_id,
                       (1 + (n %% 997) * 0.013 + (n %% 7) * 0.000001)::numeric(24, 6) AS amount,
                       CASE n %% 20 WHEN 0 THEN 'pending' WHEN 1 THEN 'exhausted' ELSE 'active' END AS status,
                       n %% 10 = 3 AS restricted,
                       %(expires)s - (%(count)s - 1 - n) * interval '1 day' / %(count)s
                           AS expires_at
                FROM generate_series(0, %(count)s - 1) n
                JOIN (SELECT id AS wallet_id, row_number() OVER (ORDER BY id) - 1 AS i
                      FROM wallets_wallet WHERE id = ANY(%(wallets)s)) w
                  ON w.i = CASE WHEN %(interleave)s THEN n %% %(wallets_count)s
                                ELSE n / %(per)s END
                """,
                {
                    "count": count,
                    "wallets_count": len(wallet_ids),
                    "wallets": wallet_ids,
                    "expires": expires_at,
                    "interleave": interleave,
                    "per": per_wallet,
                },
            )
            cursor.execute(
                """ALTER TABLE seed_grants ADD COLUMN used numeric(24, 6);
                   UPDATE seed_grants SET used = CASE n % 20 WHEN 1 THEN amount
                       WHEN 2 THEN round(amount / 3, 6) ELSE 0 END;
                   ALTER TABLE seed_grants ADD PRIMARY KEY (grant_id);"""
            )
            # Each transaction records its wallet's balances right after it (what
            # check_ledger proves against the running sum of the entries): a
            # grant's issue is followed by its usage, if any, in id order.
            cursor.execute(
                """ALTER TABLE seed_grants ADD COLUMN balance numeric(24, 6),
                                           ADD COLUMN restricted_balance numeric(24, 6);
                   UPDATE seed_grants s SET balance = r.balance,
                                            restricted_balance = r.restricted_balance
                   FROM (SELECT grant_id,
                                SUM(held) OVER running AS balance,
                                SUM(CASE WHEN restricted THEN held ELSE 0 END) OVER running
                                    AS restricted_balance
                         FROM (SELECT *, CASE WHEN status = 'pending' THEN 0
                                              ELSE amount - used END AS held
                               FROM seed_grants) g
                         WINDOW running AS (PARTITION BY wallet_id ORDER BY tx_id
                                            ROWS UNBOUNDED PRECEDING)) r
                   WHERE r.grant_id = s.grant_id;"""
            )
            _insert_select(
                cursor, Account,
                {"id": "account_id", "kind": "'grant'", "code": "''", "currency": f"'{CURRENCY}'",
                 "wallet_id": "wallet_id", "created_at": "%(now)s"},
                "FROM seed_grants", {"now": now},
            )  # fmt: skip
            _insert_select(
                cursor, LedgerTransaction,
                {"id": "tx_id", "kind": "'grant'", "wallet_id": "wallet_id",
                 "idempotency_key": f"'seed:{label}:grant:' || grant_id", "request_hash": "''",
                 "effective_at": "expires_at - interval '30 days'", "created_at": "%(now)s",
                 "actor": "'system:seed'", "memo": f"'{label} ' || n", "amount": "amount",
                 "currency": f"'{CURRENCY}'", "balance_after": "balance + used",
                 "restricted_after": "restricted_balance + CASE WHEN restricted THEN used ELSE 0 END",
                 "debt_after": "0",
                 "metadata": "jsonb_build_object('grant', grant_id, 'pending', status = 'pending')"},
                "FROM seed_grants", {"now": now},
            )  # fmt: skip
            _insert_select(
                cursor, CreditGrant,
                {"id": "grant_id", "wallet_id": "wallet_id", "account_id": "account_id",
                 "name": f"'{label} ' || n", "kind": "'paid'", "amount": "amount",
                 "remaining": "CASE WHEN status = 'pending' THEN 0 ELSE amount - used END",
                 "currency": f"'{CURRENCY}'", "effective_at": "expires_at - interval '30 days'",
                 "expires_at": "expires_at", "status": "status",
                 "condition_dimensions": """CASE WHEN restricted THEN '{"region": "eu"}'::jsonb
                                              ELSE '{}'::jsonb END""",
                 "specificity": "CASE WHEN restricted THEN 1 ELSE 0 END", "restricted": "restricted",
                 "funding_code": "'cash'", "issued_by_id": "tx_id", "created_at": "%(now)s",
                 "activated_at": "CASE WHEN status = 'pending' THEN NULL ELSE %(now)s END"},
                "FROM seed_grants", {"now": now},
            )  # fmt: skip
            _insert_select(
                cursor, Entry,
                {"transaction_id": "tx_id", "debit_account_id": "%(cash)s",
                 "credit_account_id": "account_id", "amount": "amount", "currency": f"'{CURRENCY}'"},
                "FROM seed_grants WHERE status <> 'pending'", {"cash": cash},
            )  # fmt: skip
            _insert_select(
                cursor, LedgerTransaction,
                {"id": "usage_tx_id", "kind": "'usage'", "wallet_id": "wallet_id",
                 "idempotency_key": f"'seed:{label}:usage:' || grant_id", "request_hash": "''",
                 "effective_at": "expires_at - interval '10 days'", "created_at": "%(now)s",
                 "actor": "'system:seed'", "amount": "used", "currency": f"'{CURRENCY}'",
                 "balance_after": "balance", "restricted_after": "restricted_balance",
                 "debt_after": "0"},
                "FROM seed_grants WHERE usage_tx_id IS NOT NULL", {"now": now},
            )  # fmt: skip
            _insert_select(
                cursor, Entry,
                {"transaction_id": "usage_tx_id", "debit_account_id": "account_id",
                 "credit_account_id": "%(revenue)s", "amount": "used", "currency": f"'{CURRENCY}'"},
                "FROM seed_grants WHERE usage_tx_id IS NOT NULL", {"revenue": revenue},
            )  # fmt: skip
            _insert_select(
                cursor, GrantConsumption,
                {"transaction_id": "usage_tx_id", "grant_id": "grant_id", "amount": "used"},
                "FROM seed_grants WHERE usage_tx_id IS NOT NULL", {},
            )  # fmt: skip
            cursor.execute(
                """
                UPDATE wallets_wallet w
                SET credit_balance = s.balance, restricted_balance = s.restricted
                FROM (SELECT wallet_id,
                             COALESCE(SUM(amount - used) FILTER (WHERE status <> 'pending'), 0)
                                 AS balance,
                             COALESCE(SUM(amount - used)
                                      FILTER (WHERE status <> 'pending' AND restricted), 0)
                                 AS restricted
                      FROM seed_grants GROUP BY wallet_id) s
                WHERE w.id = s.wallet_id
                """
            )
            cursor.execute(
                """SELECT MIN(grant_id), MAX(grant_id), COUNT(*),
                          COALESCE(SUM(amount - used) FILTER (WHERE status <> 'pending'), 0)
                   FROM seed_grants"""
            )
            first, last, grants, breakage = cursor.fetchone()
    return Seeded(
        label=label, wallet_ids=wallet_ids, first_grant_id=first, last_grant_id=last,
        grants=grants, expected_breakage=breakage,
    )  # fmt: skip
