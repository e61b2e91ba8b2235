"""Parallel API clients against real PostgreSQL: each thread has its own connection."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from billing.models import UsageEvent
from wallets.ledger_check import find_problems
from wallets.models import LedgerTransaction, Wallet

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


def test_8_clients_posting_the_same_event_book_it_once(api_key, alice, calls, price, credit):
    price(calls, "0.5")
    credit(alice, "10")
    _key, token = api_key
    body = {"event_id": "same", "customer": alice.account_number, "product": "api-calls",
            "quantity": "3"}  # fmt: skip

    def post(n):
        client = Client(headers={"Authorization": f"Bearer {token}"})
        response = client.post("/api/v1/usage", body, content_type="application/json")
        return response.status_code, response.json()

    results = run_parallel(8, post)

    assert {status for status, _ in results} == {200}
    answers = [answer for _, answer in results]
    assert sum(not a["replayed"] for a in answers) == 1
    first = next(a for a in answers if not a["replayed"])
    assert all(a == {**first, "replayed": a["replayed"]} for a in answers)
    assert UsageEvent.objects.count() == 1
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1
    assert Wallet.objects.get(customer=alice).credit_balance == D("8.5")
    assert find_problems() == []


def test_8_clients_spending_one_wallet_never_overspend(api_key, alice, calls, price, credit):
    price(calls, "1")
    credit(alice, "10")
    _key, token = api_key

    def spend(n):
        client = Client(headers={"Authorization": f"Bearer {token}"})
        events = [{"event_id": f"w{n}-{i}", "customer": alice.account_number,
                   "product": "api-calls", "quantity": "1"} for i in range(3)]  # fmt: skip
        response = client.post("/api/v1/usage/batch", {"events": events},
                               content_type="application/json")  # fmt: skip
        return [r["status"] for r in response.json()["results"]]

    statuses = [s for result in run_parallel(8, spend) for s in result]

    assert statuses.count(200) == 10 and statuses.count(402) == 14
    assert Wallet.objects.get(customer=alice).credit_balance == 0
    assert UsageEvent.objects.filter(status="booked").count() == 10
    assert UsageEvent.objects.filter(status="refused").count() == 14
    assert find_problems() == []
