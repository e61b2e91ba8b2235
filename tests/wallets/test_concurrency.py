"""Real parallel clients: each thread has its own PostgreSQL connection."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from billing.models import Customer
from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import LedgerTransaction

D = Decimal
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def run_parallel(workers, job):
    """Start `workers` threads at the same instant; return their results."""
    barrier = threading.Barrier(workers)

    def worker(n):
        try:
            barrier.wait(timeout=30)
            return job(n)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [f.result(timeout=120) for f in [pool.submit(worker, n) for n in range(workers)]]


def test_16_workers_never_spend_more_than_the_wallet_holds(wallet, grant, ledger_ok):
    grant(wallet, "10")
    grant(wallet, "2.5", kind="free")

    def spend(n):
        done = refused = 0
        for i in range(12):
            try:
                services.draw_down(
                    wallet=wallet.pk, amount=D("0.1"), actor=STAFF, idempotency_key=f"w{n}-{i}"
                )
                done += 1
            except errors.InsufficientFunds:
                refused += 1
        return done, refused

    results = run_parallel(16, spend)
    done = sum(d for d, _ in results)
    assert done == 125  # 12.5 / 0.1, exactly: not one draw too many
    assert sum(r for _, r in results) == 16 * 12 - 125
    wallet.refresh_from_db()
    assert wallet.credit_balance == 0 and wallet.debt == 0
    ledger_ok()


def test_16_workers_transferring_both_ways_finish_without_deadlock_or_loss(
    alice, bob, wallet, bob_wallet, grant, ledger_ok
):
    Customer.objects.filter(pk__in=[alice.pk, bob.pk]).update(transfer_policy="yes")
    grant(wallet, "100")
    grant(bob_wallet, "100")

    def shuffle(n):
        moved = 0
        for i in range(10):
            source, target = (
                (wallet.pk, bob_wallet.pk) if (n + i) % 2 else (bob_wallet.pk, wallet.pk)
            )
            try:
                services.transfer(source=source, target=target, amount=D("1.5"), actor=STAFF,
                                  idempotency_key=f"t{n}-{i}")  # fmt: skip
                moved += 1
            except errors.InsufficientFunds:
                pass
        return moved

    moved = run_parallel(16, shuffle)
    assert sum(moved) == 160
    wallet.refresh_from_db()
    bob_wallet.refresh_from_db()
    assert wallet.credit_balance + bob_wallet.credit_balance == D("200")
    assert LedgerTransaction.objects.filter(kind="transfer").count() == 160
    ledger_ok()


def test_same_key_from_8_workers_books_once(wallet, grant, ledger_ok):
    grant(wallet, "10")

    def same(n):
        return services.draw_down(
            wallet=wallet.pk, amount=D("1"), actor=STAFF, idempotency_key="one-event"
        )

    results = run_parallel(8, same)
    assert len({r.transaction_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1
    wallet.refresh_from_db()
    assert wallet.credit_balance == D("9")
    ledger_ok()


def test_same_grant_key_from_8_workers_makes_one_grant(wallet, ledger_ok):
    def same(n):
        return services.grant_credit(wallet=wallet.pk, amount=D("5"), kind="paid", name="Pack",
                                     actor=STAFF, idempotency_key="one-grant").pk  # fmt: skip

    assert len(set(run_parallel(8, same))) == 1
    wallet.refresh_from_db()
    assert wallet.credit_balance == D("5")
    ledger_ok()


def test_same_key_racing_on_two_wallets_meets_at_the_unique_index(
    wallet, bob_wallet, grant, ledger_ok
):
    grant(wallet, "10")
    grant(bob_wallet, "10")

    def race(n):
        target = wallet.pk if n % 2 else bob_wallet.pk
        try:
            return services.draw_down(
                wallet=target, amount=D("1"), actor=STAFF, idempotency_key="shared"
            ).transaction_id
        except errors.IdempotencyConflict:
            return "conflict"

    results = run_parallel(8, race)
    booked = [r for r in results if r != "conflict"]
    assert len(set(booked)) == 1 and results.count("conflict") == 4
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1
    ledger_ok()
