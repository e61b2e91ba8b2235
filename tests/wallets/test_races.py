"""Draw-downs racing the expiry sweep, reversals and transfers on the same wallets:
real parallel clients (one thread and one PostgreSQL connection each), real time.

Every operation is booked exactly once or refused with a `WalletError` (never a
deadlock or another database error), and check_ledger is clean at the end."""

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tests.factories import CustomerFactory
from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import CreditGrant, LedgerTransaction

D = Decimal
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WALLETS = 6
DRAWERS = 3
DRAWS_EACH = 60


class Outcomes:
    """What each worker saw, per operation (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.booked: dict[str, int] = {}  # idempotency key → transaction id
        self.refused: dict[str, str] = {}  # idempotency key → the WalletError's class
        self.unexpected: list[str] = []  # anything else: deadlocks, database errors
        self.usage: list[int] = []  # booked usage transactions, for the reverser
        self.transfers: list[int] = []
        self.reversed: dict[int, int] = {}  # original → reversal

    def book(self, key: str, tx_id: int, into: list[int] | None = None) -> None:
        with self.lock:
            assert key not in self.booked
            self.booked[key] = tx_id
            if into is not None:
                into.append(tx_id)

    def refuse(self, key: str, exc: errors.WalletError) -> None:
        with self.lock:
            self.refused[key] = type(exc).__name__

    def fail(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.unexpected.append(f"{what}: {type(exc).__name__}: {exc}")


def test_draw_downs_race_the_expiry_sweep_reversals_and_transfers_on_the_same_wallets():
    wallets = []
    began = time.monotonic()
    for w in range(WALLETS):
        wallet = services.open_wallet(customer=CustomerFactory(transfer_policy="yes"))
        services.change_permanent_limit(wallet=wallet, limit=D("5"), actor=STAFF, reason="test")
        services.grant_credit(wallet=wallet, amount=D("15"), kind="paid", name="Base",
                              actor=STAFF, idempotency_key=f"base-{w}")  # fmt: skip
        wallets.append(wallet.pk)
    # Each wallet: credit that never expires, and credit that expires one grant after
    # the other while the clients draw from it (drawn first: earliest expiry first).
    # The first expiry comes after the rest of the set-up: 48 grants, about 2.7 times
    # the 18 calls just timed; 8 times that, plus 2 s, so that a loaded machine moves
    # the race later instead of failing the set-up.
    effective = timezone.now()
    setup_allowance = timedelta(seconds=2 + 8 * (time.monotonic() - began))
    start = effective + setup_allowance
    for w, wallet_id in enumerate(wallets):
        for n in range(8):
            services.grant_credit(
                wallet=wallet_id, amount=D("4"), kind="free", name=f"Expiring {n}", actor=STAFF,
                idempotency_key=f"exp-{w}-{n}", effective_at=effective,
                expires_at=start + timedelta(milliseconds=40 * (n * WALLETS + w)),
            )  # fmt: skip
    last_expiry = start + timedelta(milliseconds=40 * 8 * WALLETS)
    seen = Outcomes()
    drawing = threading.Event()
    drawing.set()
    barrier = threading.Barrier(DRAWERS + 3)
    sweep_booked_while_drawing = Counter()

    def draw(n: int) -> None:
        rng = random.Random(n)
        for i in range(DRAWS_EACH):
            wallet_id = rng.choice(wallets)
            if i % 5 == 4:  # a batch of three on one wallet, each charge alone
                keys = [f"d{n}-{i}-{k}" for k in range(3)]
                charges = [services.UsageCharge(amount=D(rng.randint(1, 300)) / 100,
                                                idempotency_key=key) for key in keys]  # fmt: skip
                try:
                    results = services.draw_down_batch(
                        wallet=wallet_id, charges=charges, actor=STAFF
                    )
                except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
                    seen.fail(f"batch {keys}", exc)
                    continue
                for key, result in zip(keys, results, strict=True):
                    if isinstance(result, errors.WalletError):
                        seen.refuse(key, result)
                    else:
                        seen.book(key, result.transaction_id, seen.usage)
                continue
            key = f"d{n}-{i}"
            try:
                result = services.draw_down(wallet=wallet_id, amount=D(rng.randint(1, 400)) / 100,
                                            actor=STAFF, idempotency_key=key)  # fmt: skip
            except errors.WalletError as exc:
                seen.refuse(key, exc)
            except Exception as exc:  # noqa: BLE001
                seen.fail(f"draw {key}", exc)
            else:
                seen.book(key, result.transaction_id, seen.usage)
            time.sleep(rng.random() / 50)

    def sweep() -> None:
        while drawing.is_set():
            try:
                for batch in services.expire_due_grant_batches(batch_size=4):
                    sweep_booked_while_drawing["expired"] += batch.expired
                    for problem in batch.errors:
                        seen.fail("sweep", RuntimeError(problem))
            except Exception as exc:  # noqa: BLE001
                seen.fail("sweep", exc)
            time.sleep(0.02)

    def reverse_some() -> None:
        rng = random.Random(99)
        r = 0
        while drawing.is_set():
            with seen.lock:
                candidates = seen.usage[-20:] + seen.transfers[-5:]
            if not candidates:
                time.sleep(0.01)
                continue
            original = rng.choice(candidates)
            key = f"r{r}"
            r += 1
            try:
                tx = services.reverse(transaction_id=original, actor=STAFF, idempotency_key=key)
            except errors.WalletError as exc:  # already reversed, or credit spent since
                seen.refuse(key, exc)
            except Exception as exc:  # noqa: BLE001
                seen.fail(f"reverse {original} ({key})", exc)
            else:
                seen.book(key, tx.pk)
                with seen.lock:
                    assert original not in seen.reversed
                    seen.reversed[original] = tx.pk
            time.sleep(rng.random() / 30)

    def transfer_some() -> None:
        rng = random.Random(7)
        t = 0
        while drawing.is_set():
            source, target = rng.sample(wallets, 2)  # both directions: locks in id order
            key = f"t{t}"
            t += 1
            try:
                tx = services.transfer(source=source, target=target, amount=D("0.5"), actor=STAFF,
                                       idempotency_key=key)  # fmt: skip
            except errors.WalletError as exc:
                seen.refuse(key, exc)
            except Exception as exc:  # noqa: BLE001
                seen.fail(f"transfer {key}", exc)
            else:
                seen.book(key, tx.pk, seen.transfers)
            time.sleep(rng.random() / 20)

    def worker(job, *args):
        try:
            barrier.wait(timeout=60)
            job(*args)
        finally:
            connection.close()

    while timezone.now() < start - timedelta(
        milliseconds=300
    ):  # start just before the first expiry
        time.sleep(0.05)
    with ThreadPoolExecutor(max_workers=DRAWERS + 3) as pool:
        background = [pool.submit(worker, job) for job in (sweep, reverse_some, transfer_some)]
        drawers = [pool.submit(worker, draw, n) for n in range(DRAWERS)]
        for future in drawers:
            future.result(timeout=300)
        drawing.clear()
        for future in background:
            future.result(timeout=120)
    drawing_ended = timezone.now()

    assert seen.unexpected == []
    # every operation either booked once, with the transaction it answered, or refused
    keys = list(seen.booked) + list(seen.refused)
    assert len(keys) == len(set(keys))
    in_ledger = dict(
        LedgerTransaction.objects.filter(idempotency_key__in=keys).values_list(
            "idempotency_key", "pk"
        )
    )
    assert in_ledger == seen.booked
    assert set(seen.refused.values()) <= {"InsufficientFunds", "NotReversible"}
    reversals = LedgerTransaction.objects.filter(kind="reversal")
    assert dict(reversals.values_list("reverses_id", "pk")) == seen.reversed
    assert Counter(reversals.values_list("reverses_id", flat=True)).most_common(1)[0][1] == 1
    # the race was real: the sweep expired grants while the clients drew from them
    assert sweep_booked_while_drawing["expired"] > 0
    assert CreditGrant.objects.filter(status="expired", lots__amount__gt=0).exists()
    assert len(seen.reversed) > 0 and len(seen.transfers) > 0
    assert sum(1 for k in seen.booked if k.startswith("d")) > DRAWERS * DRAWS_EACH // 2

    # the sweep finishes what fell due after the clients stopped; each grant expired once
    while timezone.now() <= last_expiry:
        time.sleep(0.05)
    list(services.expire_due_grant_batches(batch_size=50))
    # every grant has an expiry (the default one when none was given); the ones due by
    # now are the short grants and the credit transferred out of them, which keeps
    # their expiry: each is expired, or was voided (a transfer reversed) before it fell due
    due = CreditGrant.objects.filter(expires_at__lte=last_expiry)
    assert set(due.values_list("status", flat=True)) <= {"expired", "voided"}
    expiring = due.filter(status="expired")
    assert expiring.count() >= WALLETS * 8  # the short grants, at least
    assert not CreditGrant.objects.filter(expires_at__gt=last_expiry, status="expired").exists()
    per_grant = Counter(
        LedgerTransaction.objects.filter(kind="expiry").values_list("metadata__grant", flat=True)
    )
    assert set(per_grant) == set(expiring.values_list("pk", flat=True))
    assert set(per_grant.values()) == {1}
    assert drawing_ended > start  # the draw-downs overlapped the expiries

    out = StringIO()
    call_command("check_ledger", stdout=out, stderr=StringIO())
    assert "ledger OK" in out.getvalue()
