"""The expiry sweep on several connections at once: the due grants split by wallet
(id modulo n), each partition swept by its own loop on its own connection."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection

from jobs.models import JobRun
from tests.wallets.expiry_checks import assert_each_grant_expired_exactly_once
from tests.wallets.expiry_seed import seed_due_grants
from wallets import errors, services, tasks
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, LedgerTransaction, Wallet

D = Decimal
T = datetime(2026, 3, 31, 23, 0, tzinfo=UTC)


def batches_by_database_transaction() -> list[tuple[list[int], int, int]]:
    """Per database transaction that booked expiries (xmin): the wallet partitions
    (id mod 2) it touched and its lowest and highest ledger transaction id."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_agg(DISTINCT wallet_id % 2), min(id), max(id) "
            "FROM wallets_ledgertransaction WHERE kind = 'expiry' GROUP BY xmin::text"
        )
        return cursor.fetchall()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("interleave", [False, True], ids=["wallet-by-wallet", "interleaved"])
def test_two_connections_expire_every_grant_of_many_wallets_exactly_once(interleave):
    seeded = seed_due_grants(count=4000, label="par", interleave=interleave)
    left_on_grants = dict(CreditGrant.objects.values_list("pk", "remaining"))
    balance_before = dict(Wallet.objects.values_list("pk", "credit_balance"))

    result = tasks.expire_grants(batch_size=100, connections=2)

    assert result["status"] == "succeeded" and result["failed"] == 0
    assert result["processed"] == seeded.grants
    run = JobRun.objects.get(job_name="expire_grants")
    assert (run.batches, run.items_processed) == (result["batches"], seeded.grants)
    assert_each_grant_expired_exactly_once(seeded, left_on_grants, balance_before)

    batches = batches_by_database_transaction()
    assert len(batches) == result["batches"] >= 40
    assert all(len(parts) == 1 for parts, _, _ in batches)  # a batch stays in its partition
    # the two partitions ran at once: their transaction ids interleave
    spans = {part: (min(lo for p, lo, _ in batches if p == [part]),
                    max(hi for p, _, hi in batches if p == [part])) for part in (0, 1)}  # fmt: skip
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]
    # and a rerun finds nothing left
    assert tasks.expire_grants(batch_size=100, connections=2)["processed"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_sweep_cut_short_in_one_partition_is_finished_exactly_by_the_next_run():
    seeded = seed_due_grants(count=1200, label="cut")
    left_on_grants = dict(CreditGrant.objects.values_list("pk", "remaining"))
    balance_before = dict(Wallet.objects.values_list("pk", "credit_balance"))
    at = datetime.now(UTC)
    # what a killed run leaves: some batches of one partition committed, none of the other
    cursor = None
    for _ in range(3):
        batch = services.expire_due_grants(at=at, limit=100, after=cursor, partition=(1, 2))
        cursor = batch.cursor
    assert CreditGrant.objects.filter(status="expired").count() == 300
    assert find_problems() == []

    result = tasks.expire_grants(batch_size=100, connections=2)
    assert result["processed"] == seeded.grants - 300 and result["failed"] == 0
    assert_each_grant_expired_exactly_once(seeded, left_on_grants, balance_before)


@pytest.mark.django_db(transaction=True)
def test_one_connection_sweeps_as_before_in_one_loop():
    seeded = seed_due_grants(count=500, label="one")
    left_on_grants = dict(CreditGrant.objects.values_list("pk", "remaining"))
    balance_before = dict(Wallet.objects.values_list("pk", "credit_balance"))
    result = tasks.expire_grants(batch_size=100, connections=1)
    assert (result["processed"], result["batches"]) == (seeded.grants, 5)
    assert_each_grant_expired_exactly_once(seeded, left_on_grants, balance_before)
    parts = [p for p, _, _ in batches_by_database_transaction()]
    assert sorted(parts) == [[0, 1]] * 5  # every batch took both kinds of wallets


@pytest.mark.django_db
def test_inside_a_transaction_the_partitions_run_one_after_the_other(
    wallet, bob_wallet, grant, ledger_ok
):
    # Other connections could not see this test's uncommitted rows: same partitions,
    # swept on the caller's connection.
    with time_machine.travel(T - timedelta(days=30), tick=False):
        for n in range(6):
            grant(wallet if n % 2 else bob_wallet, f"{n + 1}.5", expires_at=T)
    with time_machine.travel(T, tick=False):
        batches = list(services.expire_due_grant_batches(batch_size=2, connections=2))
    assert sum(b.expired for b in batches) == 6
    assert sum((b.breakage for b in batches), D(0)) == D("24")
    # partition 0's wallets first, then partition 1's, in batches of their own
    booked = LedgerTransaction.objects.filter(kind="expiry").order_by("pk")
    parities = [w % 2 for w in booked.values_list("wallet_id", flat=True)]
    assert parities == sorted(parities)
    assert len(batches) == (4 if wallet.pk % 2 != bob_wallet.pk % 2 else 3)
    ledger_ok()


@pytest.mark.django_db
def test_a_partition_must_exist():
    with pytest.raises(errors.WalletError, match="partition 2 of 2"):
        services.expire_due_grants(partition=(2, 2))
