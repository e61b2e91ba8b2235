"""Random sequences of ledger operations against a simple in-memory model.

Every path that moves money is a rule: grants (active or pending, effective now,
earlier or later, with or without an expiry, restricted or not), activation, single
and batch draw-downs (at now or back-dated), the Python expiry and the SQL sweep,
voids, transfers, reversals of usage, of a grant's funding and of transfers,
settling debt (one wallet, and the `settle_debts` job), debt payments, permanent
limit changes and temporary increases, and time moving forward (time_machine), so
grants become effective, expire and increases lapse.

The model predicts each outcome from the documented rules (docs/architecture.md,
"Money in time" and the reversal rules): booked or refused, the lots, the debt,
each grant's remaining and status. After every step it must equal the database
(cached balances, every grant, available funds) and `find_problems()` must be
empty. Each example runs in its own savepoint, rolled back in teardown, so every
example starts from an empty ledger and the sweep only sees its own grants.

`make test` runs 200 examples of 50 steps, derandomised; `make soak` runs 2,000
(`LEDGER_PROPERTY_EXAMPLES`)."""

import os
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing.models import ProductItem
from tests.factories import CustomerFactory
from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, CreditLimitChange, PrepaidCreditSettings, Wallet

D = Decimal
ZERO = D(0)
# Money with 5 decimals: grants of up to 30, usage and the rest of up to 5 (so
# credit usually covers a usage, and sometimes does not).
credit_amounts = st.integers(min_value=1, max_value=3_000_000).map(lambda n: D(n) / 100_000)
amounts = st.integers(min_value=1, max_value=500_000).map(lambda n: D(n) / 100_000)
REGIONS = ["eu", "us"]
LIVE = ("active", "exhausted", "pending")
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)  # fixed: runs are reproducible
DEFAULT_DAYS = 3  # the default expiry period in these runs: defaults expire within a run
# Outcomes a long run (`make soak`, 2,000 examples) must reach, by prefix: if a change to
# the strategies or the rules starves one of them, the test says so. (Derandomised
# runs are seeded from this test's code: an edit here plays other sequences, so only
# outcomes that every run reaches many times are listed. "settle job: 1 wallets" is
# not: one fresh-clone run reached it, the next, with only docs changed, did not —
# the runs are not fully reproducible (database ids differ between test orders); the
# settle job's payments are pinned by tests/wallets/test_time_rules.py. For the same
# reason the rare outcomes "grant: active, paid debt" (7 in that run) and "usage
# stamped before an increase lapsed" (5; bug 3, pinned by test_time_rules) are
# counted and printed but not required.)
MUST_REACH = [
    "batch event: booked, credit",
    "batch event: refused",
    "draw back-dated: booked, credit",
    "draw back-dated: refused",
    "expire_grant: refused",
    "reverse funding: booked",
    "reverse funding: refused",
    "reverse transfer: booked",
    "reverse transfer: refused",
    "reverse usage: credit on account",
    "time passes, sweep: 1 due",
    "transfer: booked, paid debt",
    "transfer: refused",
]
EXAMPLES = int(os.environ.get("LEDGER_PROPERTY_EXAMPLES", "200"))
STEPS = int(os.environ.get("LEDGER_PROPERTY_STEPS", "50"))
FULL_CHECK_EVERY_STEP = os.environ.get("LEDGER_PROPERTY_FULL_CHECK") == "step"

# What the runs of this process did, outcome by outcome (see `event`).
OUTCOMES: Counter[str] = Counter()


def event(label: str) -> None:
    """Count an outcome (booked, refused, ...): the test asserts that a full run
    reached every one of them, so a change that starves a path fails loudly."""
    OUTCOMES[label] += 1
    hypothesis_event(label)


def paid_by(lots: dict, to_debt: Decimal) -> str:
    return " and ".join([*(["credit"] if lots else []), *(["debt"] if to_debt else [])])


hours = st.integers(min_value=1, max_value=96).map(lambda h: timedelta(hours=h))


@dataclass
class ModelGrant:
    wallet: str
    amount: Decimal
    remaining: Decimal
    status: str
    priority: int
    free: bool
    region: str | None
    pk: int
    effective_at: datetime
    expires_at: datetime  # every grant expires (the default period at the latest)
    source: int | None = None  # received by transfer: the sender's grant it came from
    issued: Decimal = ZERO  # what its funding left in it (amount − the debt it paid)
    paid: Decimal = ZERO  # the debt its funding paid at once

    def order(self):
        """The draw-down order (wallets.services.draw_order)."""
        return (-(self.region is not None), self.priority, self.expires_at, not self.free, self.pk)

    def in_force(self, at: datetime) -> bool:
        """Active and effective_at ≤ at < expires_at (CreditGrant.objects.in_force)."""
        return self.status == "active" and self.effective_at <= at < self.expires_at


@dataclass
class Funding:
    """A transaction that issued a grant: the issue of a grant created active, the
    activation of a pending one, or the (moneyless) issue of a pending one."""

    tx_id: int
    grant: int
    moneyless: bool  # the issue of a grant created pending: reversal is refused


@dataclass
class ModelTransfer:
    tx_id: int
    source: str
    target: str
    taken: dict[int, Decimal]  # sender grant → part
    received: list[int] = field(default_factory=list)  # the target's grants


class LedgerMachine(RuleBasedStateMachine):
    world: dict  # the wallets and the product item, made once by the test

    def __init__(self):
        super().__init__()
        # Time stands still unless a rule moves it. The savepoint is rolled back in
        # teardown: each example starts from the same two empty wallets (a raw
        # savepoint, not an atomic block, so the sweep's durable block may still
        # open inside the test's transaction).
        self.traveller = time_machine.travel(T0, tick=False)
        self.clock = self.traveller.start()
        self.now = T0
        self.savepoint = transaction.savepoint()
        self.run = uuid.uuid4().hex[:8]
        self.n = 0
        self.item = self.world["item"]
        self.wallets = self.world["wallets"]
        self.ids = [w.pk for w in self.wallets.values()]
        self.grants: dict[int, ModelGrant] = {}
        self.debt = {"a": ZERO, "b": ZERO}
        self.limit = {"a": D(5), "b": ZERO}
        self.increase: dict[str, tuple[Decimal, datetime | None]] = {
            "a": (ZERO, None),
            "b": (ZERO, None),
        }
        self.usages: list[tuple[int, str, dict[int, Decimal], Decimal]] = []
        self.fundings: list[Funding] = []
        self.transfers: list[ModelTransfer] = []
        self.reversed: set[int] = set()

    def teardown(self):
        try:
            assert find_problems() == []
        finally:
            transaction.savepoint_rollback(self.savepoint)
            self.traveller.stop()

    # --- the model's rules ---------------------------------------------------------

    def key(self):
        self.n += 1
        return f"{self.run}-{self.n}"

    def limit_now(self, w):
        """Permanent limit + the temporary increase while now < valid_until."""
        increase, until = self.increase[w]
        if increase > 0 and until is not None and self.now < until:
            return self.limit[w] + increase
        return self.limit[w]

    def balance(self, w, restricted=None):
        return sum(
            (g.remaining for g in self.grants.values()
             if g.wallet == w and g.status in ("active", "exhausted")
             and (restricted is None or (g.region is not None) == restricted)),
            ZERO,
        )  # fmt: skip

    def spendable(self, w):
        """Unrestricted credit in force now, in draw-down order."""
        return sorted(
            (g for g in self.grants.values()
             if g.wallet == w and g.region is None and g.remaining > 0 and g.in_force(self.now)),
            key=ModelGrant.order,
        )  # fmt: skip

    def eligible(self, w, region, at):
        """Grants a usage event at `at` may draw: in force at the event's time."""
        return sorted(
            (g for g in self.grants.values()
             if g.wallet == w and g.remaining > 0 and g.region in (None, region) and g.in_force(at)),
            key=ModelGrant.order,
        )  # fmt: skip

    @staticmethod
    def settle_status(g):
        if g.status in ("active", "exhausted"):
            g.status = "exhausted" if g.remaining == 0 else "active"

    def take(self, grants, amount):
        """Draw `amount` from `grants` in order: {pk: part}."""
        left, lots = amount, {}
        for g in grants:
            if left <= 0:
                break
            part = min(left, g.remaining)
            g.remaining -= part
            self.settle_status(g)
            lots[g.pk] = part
            left -= part
        return lots

    def fund(self, g):
        """An issue or activation: the full amount in; unrestricted credit in force now
        pays the debt at once; credit not yet effective pays nothing yet."""
        g.status, g.remaining = "active", g.amount
        paid = ZERO
        if g.region is None and g.effective_at <= self.now < g.expires_at:
            paid = min(self.debt[g.wallet], g.amount)
        g.remaining -= paid
        self.debt[g.wallet] -= paid
        g.paid, g.issued = paid, g.amount - paid
        self.settle_status(g)

    def book_usage(self, w, amount, region, at):
        """Predict one usage event: (lots, to debt), or None when refused."""
        usable = self.eligible(w, region, at)
        covered = min(amount, sum((g.remaining for g in usable), ZERO))
        room = max(ZERO, self.limit_now(w) - self.debt[w])  # the limit of now, not of `at`
        increase, until = self.increase[w]
        if increase > 0 and until is not None and at < until <= self.now and amount > covered:
            # issue 12, bug 3: stamped while a temporary increase was valid, sent after it lapsed
            event(
                f"usage stamped before an increase lapsed: {'refused' if amount - covered > room else 'booked'}"
            )
        if amount - covered > room:
            return None
        lots = self.take(usable, amount)
        self.debt[w] += amount - covered
        return lots, amount - covered

    # --- rules -----------------------------------------------------------------------

    grant_args = st.fixed_dictionaries({
        "w": st.sampled_from("ab"), "amount": credit_amounts, "free": st.booleans(),
        "priority": st.integers(0, 3), "region": st.none() | st.sampled_from(REGIONS),
        "pending": st.sampled_from([False, False, True]),
        "starts": st.one_of(st.just(0), st.integers(-48, -1), st.integers(1, 48)),
        "lasts": st.none() | hours,
    })  # fmt: skip

    @initialize(grants=st.lists(grant_args, min_size=1, max_size=5))
    def some_credit(self, grants):
        """Every example starts with a few grants (hypothesis' swarm testing may
        switch the `grant` rule off for a whole example)."""
        for args in grants:
            self.grant_credit(**args)

    @rule(args=grant_args)
    def grant(self, args):
        self.grant_credit(**args)

    def grant_credit(self, w, amount, free, priority, region, pending, starts, lasts):
        """Active, or pending; effective now, earlier or later; with an expiry, or
        the default one (effective_at + the default period)."""
        effective = self.now + timedelta(hours=starts)
        expires = effective + lasts if lasts else None
        g = services.grant_credit(
            wallet=self.wallets[w], amount=amount, kind="free" if free else "paid", name="g", actor=STAFF,
            idempotency_key=self.key(), priority=priority, pending=pending,
            condition_dimensions={"region": region} if region else None,
            effective_at=effective if starts else None, expires_at=expires,
        )  # fmt: skip
        model = ModelGrant(w, amount, ZERO, "pending", priority, free, region, g.pk, effective,
                           expires or effective + timedelta(days=DEFAULT_DAYS))  # fmt: skip
        assert (g.effective_at, g.expires_at) == (model.effective_at, model.expires_at)
        self.grants[g.pk] = model
        self.fundings.append(Funding(g.issued_by_id, g.pk, moneyless=pending))
        if not pending:
            self.fund(model)
            event(f"grant: active{', paid debt' if model.paid else ''}")

    @precondition(lambda self: any(g.status == "pending" for g in self.grants.values()))
    @rule(data=st.data())
    def activate(self, data):
        g = data.draw(st.sampled_from([g for g in self.grants.values() if g.status == "pending"]))
        call = dict(grant=g.pk, external_transaction_id="TX", actor=STAFF, idempotency_key=self.key())  # fmt: skip
        if g.expires_at <= self.now:  # expired credit cannot be activated
            with pytest.raises(errors.InvalidGrantState):
                services.activate_grant(**call)
            event("activate: refused, expired")
            return
        tx = services.activate_grant(**call)
        self.fund(g)
        self.fundings.append(Funding(tx.pk, g.pk, moneyless=False))

    # One argument: hypothesis tries the rules in order of their number of
    # arguments, then name, and picks the first valid one most often: the draw-down.
    @rule(args=st.fixed_dictionaries({
        "w": st.sampled_from("ab"), "amount": amounts, "region": st.sampled_from(REGIONS),
        "back": st.one_of(st.just(0), st.integers(1, 24), st.integers(25, 72)),
    }))  # fmt: skip
    def draw(self, args):
        self.draw_one(**args)

    def draw_one(self, w, amount, region, back):
        at = self.now - timedelta(hours=back)
        expected = self.book_usage(w, amount, region, at)
        try:
            result = services.draw_down(wallet=self.wallets[w], amount=amount, actor=STAFF,
                                        idempotency_key=self.key(), item_id=self.item.pk,
                                        dimensions={"region": region}, at=at if back else None)  # fmt: skip
        except errors.InsufficientFunds:
            assert expected is None
            event(f"draw{' back-dated' if back else ''}: refused")
            return
        assert expected is not None
        lots, to_debt = expected
        event(f"draw{' back-dated' if back else ''}: booked, {paid_by(lots, to_debt)}")
        assert (dict(result.lots), result.to_debt) == (lots, to_debt)
        self.usages.append((result.transaction_id, w, lots, to_debt))

    @rule(w=st.sampled_from("ab"), alike=st.booleans(),
          events=st.lists(st.tuples(amounts, st.sampled_from(REGIONS), st.just(0) | st.integers(1, 72)),
                          min_size=1, max_size=6))  # fmt: skip
    def draw_batch(self, w, alike, events):
        if alike:  # one item, one dimension set, all now: the set-based fast path's case
            events = [(amount, events[0][1], 0) for amount, _, _ in events]
        charges = [
            services.UsageCharge(amount=amount, idempotency_key=self.key(), item_id=self.item.pk,
                                 dimensions={"region": region},
                                 at=self.now - timedelta(hours=back) if back else None)
            for amount, region, back in events
        ]  # fmt: skip
        results = services.draw_down_batch(wallet=self.wallets[w], charges=charges, actor=STAFF)
        assert len(results) == len(events)
        for (amount, region, back), result in zip(events, results, strict=True):
            # each event stands alone, as if sent separately in that order
            expected = self.book_usage(w, amount, region, self.now - timedelta(hours=back))
            if expected is None:
                assert isinstance(result, errors.InsufficientFunds), result
                event("batch event: refused")
                continue
            assert isinstance(result, services.DrawDown), result
            lots, to_debt = expected
            event(f"batch event: booked, {paid_by(lots, to_debt)}")
            assert (dict(result.lots), result.to_debt) == (lots, to_debt)
            self.usages.append((result.transaction_id, w, lots, to_debt))

    @rule(delta=st.integers(1, 48 * 60).map(lambda m: timedelta(minutes=m)),
          sweep=st.sampled_from([None, 1, 2, 1000]))  # fmt: skip
    def time_passes(self, delta, sweep):
        """The clock moves on (grants become effective, expire, increases lapse); then,
        perhaps, the SQL sweep runs (in batches of `sweep` grants), as the beat would."""
        self.now += delta
        self.clock.move_to(self.now)
        if sweep is None:
            event("time passes")
            return
        due = [g for g in self.grants.values() if g.status in LIVE and g.expires_at <= self.now]
        batches = list(services.expire_due_grant_batches(batch_size=sweep, at=self.now))
        assert sum(b.expired for b in batches) == len(due)
        assert sum((b.breakage for b in batches), ZERO) == sum((g.remaining for g in due), ZERO)
        assert all(not b.errors for b in batches)
        event(f"time passes, sweep: {min(len(due), 3)}{'+' if len(due) >= 3 else ''} due")
        for g in due:
            g.remaining, g.status = ZERO, "expired"

    @precondition(lambda self: any(g.status in LIVE for g in self.grants.values()))
    @rule(data=st.data(), due_one=st.booleans())
    def expire_one(self, data, due_one):
        """The Python path, `expire_grant`: refused before the expiry date."""
        live = [g for g in self.grants.values() if g.status in LIVE]
        due = [g for g in live if g.expires_at <= self.now]
        g = data.draw(st.sampled_from(due if due and due_one else live))
        if g.expires_at > self.now:
            with pytest.raises(errors.InvalidGrantState):
                services.expire_grant(grant=g.pk, actor=STAFF, at=self.now)
            event("expire_grant: refused, not due")
            return
        event("expire_grant: expired")
        tx = services.expire_grant(grant=g.pk, actor=STAFF, at=self.now)
        assert tx is not None and tx.amount == g.remaining and tx.effective_at == g.expires_at
        g.remaining, g.status = ZERO, "expired"

    @precondition(lambda self: any(g.status in LIVE for g in self.grants.values()))
    @rule(data=st.data())
    def void(self, data):
        g = data.draw(st.sampled_from([g for g in self.grants.values() if g.status in LIVE]))
        services.void_grant(grant=g.pk, actor=STAFF, idempotency_key=self.key())
        source = self.grants.get(g.source) if g.source else None
        # transferred credit goes back to the sender's grant, unless that has ended
        if source is not None and source.status in ("active", "exhausted") and g.remaining:
            source.remaining += g.remaining
            source.status = "active"
        g.remaining, g.status = ZERO, "voided"

    @rule(amount=amounts, forward=st.booleans())
    def transfer(self, amount, forward):
        source, target = ("a", "b") if forward else ("b", "a")
        usable = self.spendable(source)  # only unrestricted credit in force now moves
        call = dict(source=self.wallets[source], target=self.wallets[target], amount=amount,
                    actor=STAFF, idempotency_key=self.key())  # fmt: skip
        if amount > sum((g.remaining for g in usable), ZERO):
            with pytest.raises(errors.InsufficientFunds):
                services.transfer(**call)
            event("transfer: refused")
            return
        tx = services.transfer(**call)
        taken = self.take(usable, amount)
        received_pks = tx.metadata["received_grants"]
        assert len(received_pks) == len(taken)
        moved = ModelTransfer(tx.pk, source, target, taken, received_pks)
        received = []
        for (origin, part), pk in zip(taken.items(), received_pks, strict=True):
            # each part arrives as its own grant, effective now, keeping the sender's expiry
            received.append(ModelGrant(target, part, ZERO, "pending", 100, False, None, pk,
                                       self.now, self.grants[origin].expires_at, source=origin))  # fmt: skip
        for r in sorted(received, key=ModelGrant.order):  # they pay the receiver's debt first
            self.grants[r.pk] = r
            self.fund(r)
        event(f"transfer: booked{', paid debt' if any(r.paid for r in received) else ''}")
        self.transfers.append(moved)

    @precondition(lambda self: self.usages)
    @rule(data=st.data())
    def reverse_usage(self, data):
        tx_id, w, lots, to_debt = data.draw(st.sampled_from(self.usages))
        self.usages.remove((tx_id, w, lots, to_debt))
        services.reverse(transaction_id=tx_id, actor=STAFF, idempotency_key=self.key())
        for pk, part in lots.items():
            g = self.grants[pk]
            if g.status in ("active", "exhausted"):  # an ended grant sends it on
                g.remaining += part
                g.status = "active"
        back = min(self.debt[w], to_debt)
        self.debt[w] -= back
        if to_debt > back:  # debt since paid: the excess becomes a credit on account
            refund = CreditGrant.objects.filter(
                wallet=self.wallets[w], kind="payment_on_account"
            ).latest("id")
            event("reverse usage: credit on account")
            self.grants[refund.pk] = ModelGrant(
                w, to_debt - back, to_debt - back, "active", 100, False, None, refund.pk,
                self.now, self.now + timedelta(days=DEFAULT_DAYS),
            )  # fmt: skip

    @precondition(lambda self: self.fundings)
    @rule(data=st.data())
    def reverse_funding(self, data):
        """Reversing a grant's issue (or activation): exact while its credit is
        unspent, refused otherwise, and always refused for the moneyless issue of a
        grant created pending (void it instead)."""
        funding = data.draw(st.sampled_from(self.fundings))
        g = self.grants[funding.grant]
        call = dict(transaction_id=funding.tx_id, actor=STAFF, idempotency_key=self.key())
        if (
            funding.moneyless
            or funding.tx_id in self.reversed
            or (g.issued > 0 and g.remaining < g.issued)
        ):
            with pytest.raises(errors.NotReversible):
                services.reverse(**call)
            event("reverse funding: refused")
            return
        services.reverse(**call)
        event(f"reverse funding: booked{', debt back' if g.paid else ''}")
        self.reversed.add(funding.tx_id)
        g.remaining -= g.issued
        self.debt[g.wallet] += g.paid  # the debt it paid comes back
        if g.issued > 0:
            g.status = "voided"
        self.settle_status(g)

    @precondition(lambda self: self.transfers)
    @rule(data=st.data())
    def reverse_transfer(self, data):
        moved = data.draw(st.sampled_from(self.transfers))
        received = [self.grants[pk] for pk in moved.received]
        call = dict(transaction_id=moved.tx_id, actor=STAFF, idempotency_key=self.key())
        if moved.tx_id in self.reversed or any(
            r.issued > 0 and r.remaining < r.issued for r in received
        ):
            with pytest.raises(errors.NotReversible):
                services.reverse(**call)
            event("reverse transfer: refused")
            return
        services.reverse(**call)
        event("reverse transfer: booked")
        self.reversed.add(moved.tx_id)
        for r in received:
            r.remaining -= r.issued
            self.debt[r.wallet] += r.paid
            if r.issued > 0:
                r.status = "voided"
            self.settle_status(r)
        for pk, part in moved.taken.items():
            origin = self.grants[pk]
            if origin.status in ("active", "exhausted"):  # an ended grant sends it on
                origin.remaining += part
                origin.status = "active"

    @rule(w=st.sampled_from("ab"), amount=st.none() | amounts, job=st.booleans())
    def settle(self, w, amount, job):
        """Only unrestricted credit in force now pays debt: `settle_debt` on one
        wallet, or the `settle_debts` job on every wallet that owes and holds such
        credit."""
        if job:
            expected = 0
            for name in "ab":
                usable = self.spendable(name)
                target = min(self.debt[name], sum((g.remaining for g in usable), ZERO))
                if target > 0:
                    expected += 1
                    self.take(usable, target)
                    self.debt[name] -= target
            assert services.settle_effective_credit() == expected
            event(f"settle job: {expected} wallets")
            return
        usable = self.spendable(w)
        available = sum((g.remaining for g in usable), ZERO)
        target = min(self.debt[w], available, amount if amount is not None else self.debt[w])
        tx = services.settle_debt(wallet=self.wallets[w], actor=STAFF, idempotency_key=self.key(),
                                  amount=amount)  # fmt: skip
        if target <= 0:
            assert tx is None
            event("settle: nothing to settle")
            return
        assert tx is not None and tx.amount == target
        event("settle: settled")
        self.take(usable, target)
        self.debt[w] -= target

    @rule(w=st.sampled_from("ab"), amount=amounts)
    def pay_debt(self, w, amount):
        call = dict(wallet=self.wallets[w], amount=amount, actor=STAFF, idempotency_key=self.key())
        if amount > self.debt[w]:
            with pytest.raises(errors.InvalidAmount):
                services.record_debt_payment(**call)
            return
        services.record_debt_payment(**call)
        self.debt[w] -= amount

    @rule(w=st.sampled_from("ab"), limit=st.sampled_from([D(0), D(2), D(5), D(20)]))
    def set_limit(self, w, limit):
        if limit == self.limit[w]:  # the same limit again changes nothing
            assert (
                services.change_permanent_limit(
                    wallet=self.wallets[w], limit=limit, actor=STAFF, reason="test"
                )
                is None
            )
            return
        if limit < self.debt[w]:  # collect the debt first
            with pytest.raises(errors.LimitRefused):
                services.change_permanent_limit(
                    wallet=self.wallets[w], limit=limit, actor=STAFF, reason="test"
                )
            return
        services.change_permanent_limit(
            wallet=self.wallets[w], limit=limit, actor=STAFF, reason="test"
        )
        self.limit[w] = limit

    @rule(w=st.sampled_from("ab"), increase=st.sampled_from([D(0), D(3), D(10), D(50)]),
          lasts=st.integers(1, 48 * 60).map(lambda m: timedelta(minutes=m)))  # fmt: skip
    def temporary_increase(self, w, increase, lasts):
        # No service sets a temporary increase yet (README "Not done yet": owned by the
        # credit-limit issue; the admin shows it read-only). The test does what such a
        # service must: set the two fields and record the change in the limit history,
        # which check_ledger reads to know the limit in force when debt was booked.
        until = self.now + lasts
        wallet = Wallet.objects.select_for_update().get(pk=self.wallets[w].pk)
        CreditLimitChange.objects.create(
            wallet=wallet, changed_at=self.now, actor=STAFF.label, old_limit=wallet.credit_limit,
            new_limit=wallet.credit_limit, old_temporary_increase=wallet.temporary_credit_increase,
            new_temporary_increase=increase, valid_until=until, reason="property test",
        )  # fmt: skip
        Wallet.objects.filter(pk=wallet.pk).update(
            temporary_credit_increase=increase, temporary_increase_valid_until=until
        )
        self.increase[w] = (increase, until)

    # --- what must hold after every step ----------------------------------------------

    @invariant()
    def a_millisecond_passes(self):
        """No two steps share an instant, as on a real clock: check_ledger orders
        limit changes and the usage booked under them by time."""
        self.now += timedelta(milliseconds=1)
        self.clock.move_to(self.now)

    @invariant()
    def balances_match_the_model(self):
        """Cheap, after every step (two statements): each wallet's cached balances,
        debt and available funds (the SQL definition the draw-down uses, at now), and
        every grant's remaining and status."""
        with connection.cursor() as db:
            db.execute(
                "SELECT id, credit_balance, restricted_balance, debt,"
                " wallets_available_funds(id, %s) FROM wallets_wallet WHERE id = ANY(%s)",
                [self.now, self.ids],
            )
            wallets = {row[0]: row[1:] for row in db.fetchall()}
            db.execute(
                "SELECT id, remaining, status FROM wallets_creditgrant WHERE wallet_id = ANY(%s)",
                [self.ids],
            )
            stored = {pk: (remaining, status) for pk, remaining, status in db.fetchall()}
        for name, wallet in self.wallets.items():
            spendable = sum((g.remaining for g in self.spendable(name)), ZERO)
            expected = (self.balance(name), self.balance(name, restricted=True), self.debt[name],
                        spendable + self.limit_now(name) - self.debt[name])  # fmt: skip
            assert wallets[wallet.pk] == expected, name
        assert stored == {pk: (g.remaining, g.status) for pk, g in self.grants.items()}

    @precondition(lambda self: FULL_CHECK_EVERY_STEP)
    @invariant()
    def the_ledger_proves_itself(self):
        """`find_problems()` after every step: only with LEDGER_PROPERTY_FULL_CHECK=step
        (eight statements a step; in `make test` it runs at the end of each example)."""
        assert find_problems() == []


def make_world():
    """Two empty wallets that may transfer, `a` with a credit limit of 5, and a
    default expiry of a few days (so defaults expire within a run)."""
    PrepaidCreditSettings.load()
    PrepaidCreditSettings.objects.filter(pk=1).update(
        default_expiry_count=DEFAULT_DAYS, default_expiry_unit="days"
    )
    wallets = {
        name: services.open_wallet(customer=CustomerFactory(transfer_policy="yes"))
        for name in ("a", "b")
    }
    services.change_permanent_limit(wallet=wallets["a"], limit=D("5"), actor=STAFF, reason="test")
    item = ProductItem.objects.get_or_create(code="calls", defaults={"name": "Calls"})[0]
    return {"wallets": wallets, "item": item}


@pytest.mark.django_db
def test_random_operation_sequences_keep_the_ledger_exact():
    LedgerMachine.world = make_world()
    OUTCOMES.clear()
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                derandomize=True,
                database=None,
                print_blob=False,
            ),
        )
    finally:
        summary = "\n".join(f"{n:6} {label}" for label, n in sorted(OUTCOMES.items()))
        sys.stderr.write(f"\nledger property outcomes:\n{summary}\n")
    # Asserted only in the long run (`make soak`, 2,000 examples): at make test's 200,
    # which outcomes a run reaches depends on database ids that differ between test
    # orders, and four fresh-clone runs each missed a different rare one. make test
    # prints the counts above.
    if EXAMPLES >= 2000:
        missed = [p for p in MUST_REACH if not any(label.startswith(p) for label in OUTCOMES)]
        assert not missed, f"no example reached: {missed}"
