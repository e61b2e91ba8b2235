"""Random sequences of ledger operations against a simple in-memory model.

After every step the model's balances must equal the wallets' cached ones and
`check_ledger`'s invariants must hold."""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
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
from wallets.models import CreditGrant, Wallet

D = Decimal
amounts = st.integers(min_value=1, max_value=2_000_000).map(
    lambda n: D(n) / 100_000
)  # 0.00001 .. 20
REGIONS = ["eu", "us"]


@dataclass
class ModelGrant:
    wallet: str
    remaining: Decimal
    status: str
    priority: int
    free: bool
    region: str | None
    expires: bool  # expires within the run (the `expire` rule may expire it)
    pk: int
    expires_at: object = None  # every grant expires (the default period at the latest)
    source: int | None = None  # received by transfer: the sender's grant it came from

    def order(self):
        """The draw-down order (wallets.services.draw_order)."""
        return (-(self.region is not None), self.priority, self.expires_at, not self.free, self.pk)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.run = uuid.uuid4().hex[:8]
        self.n = 0
        self.item = ProductItem.objects.get_or_create(code="calls", defaults={"name": "Calls"})[0]
        self.wallets = {}
        for name in ("a", "b"):
            customer = CustomerFactory(transfer_policy="yes")
            self.wallets[name] = services.open_wallet(customer=customer)
        services.set_credit_limit(wallet=self.wallets["a"], limit=D("5"), actor=STAFF)
        self.grants: dict[int, ModelGrant] = {}
        self.debt = {"a": D(0), "b": D(0)}
        self.limit = {"a": D(5), "b": D(0)}
        self.usages: list[tuple[int, str, dict[int, Decimal], Decimal]] = []
        self.far = timezone.now() + timedelta(days=2)

    def key(self):
        self.n += 1
        return f"{self.run}-{self.n}"

    def balance(self, w, restricted=None):
        return sum(
            (g.remaining for g in self.grants.values()
             if g.wallet == w and g.status in ("active", "exhausted")
             and (restricted is None or (g.region is not None) == restricted)),
            D(0),
        )  # fmt: skip

    def pay_debt_from(self, w, g):
        paid = min(self.debt[w], g.remaining) if g.region is None else D(0)
        g.remaining -= paid
        self.debt[w] -= paid

    @rule(w=st.sampled_from("ab"), amount=amounts, free=st.booleans(), priority=st.integers(0, 3),
          region=st.none() | st.sampled_from(REGIONS), expires=st.booleans(), pending=st.booleans())  # fmt: skip
    def grant(self, w, amount, free, priority, region, expires, pending):
        g = services.grant_credit(
            wallet=self.wallets[w], amount=amount, kind="free" if free else "paid", name="g", actor=STAFF,
            idempotency_key=self.key(), priority=priority, pending=pending,
            condition_dimensions={"region": region} if region else None,
            expires_at=timezone.now() + timedelta(days=1) if expires else None,
        )  # fmt: skip
        model = ModelGrant(w, D(0) if pending else amount, "pending" if pending else "active",
                           priority, free, region, expires, g.pk, g.expires_at)  # fmt: skip
        self.grants[g.pk] = model
        if not pending:
            self.pay_debt_from(w, model)
            model.status = "exhausted" if model.remaining == 0 else "active"

    @rule(data=st.data())
    def activate(self, data):
        pending = [g for g in self.grants.values() if g.status == "pending"]
        if not pending:
            return
        g = data.draw(st.sampled_from(pending))
        services.activate_grant(
            grant=g.pk, external_transaction_id="TX", actor=STAFF, idempotency_key=self.key()
        )
        g.remaining = CreditGrant.objects.get(pk=g.pk).amount
        g.status = "active"
        self.pay_debt_from(g.wallet, g)
        g.status = "exhausted" if g.remaining == 0 else "active"

    @rule(w=st.sampled_from("ab"), amount=amounts, region=st.sampled_from(REGIONS))
    def draw(self, w, amount, region):
        usable = [g for g in self.grants.values()
                  if g.wallet == w and g.status == "active" and g.remaining > 0 and g.region in (None, region)]  # fmt: skip
        usable.sort(key=ModelGrant.order)
        covered = min(amount, sum((g.remaining for g in usable), D(0)))
        headroom = max(D(0), self.limit[w] - self.debt[w])
        try:
            result = services.draw_down(wallet=self.wallets[w], amount=amount, actor=STAFF,
                                        idempotency_key=self.key(), item_id=self.item.pk,
                                        dimensions={"region": region})  # fmt: skip
        except errors.InsufficientFunds:
            assert amount - covered > headroom
            return
        assert amount - covered <= headroom
        left, lots = amount, {}
        for g in usable:
            part = min(left, g.remaining)
            if part <= 0:
                break
            g.remaining -= part
            g.status = "exhausted" if g.remaining == 0 else "active"
            lots[g.pk] = part
            left -= part
        assert dict(result.lots) == lots
        self.debt[w] += left
        self.usages.append((result.transaction_id, w, lots, left))

    @rule(data=st.data())
    def expire(self, data):
        due = [
            g
            for g in self.grants.values()
            if g.expires and g.status in ("active", "exhausted", "pending")
        ]
        if not due:
            return
        g = data.draw(st.sampled_from(due))
        services.expire_grant(grant=g.pk, actor=STAFF, at=self.far)
        g.remaining, g.status = D(0), "expired"

    @rule(data=st.data())
    def void(self, data):
        live = [g for g in self.grants.values() if g.status in ("active", "exhausted", "pending")]
        if not live:
            return
        g = data.draw(st.sampled_from(live))
        services.void_grant(grant=g.pk, actor=STAFF, idempotency_key=self.key())
        source = self.grants.get(g.source) if g.source else None
        if (
            source is not None
            and source.status in ("active", "exhausted")
            and g.status != "pending"
        ):
            source.remaining += g.remaining  # a transfer voids back to the sender's grant
            source.status = "exhausted" if source.remaining == 0 else "active"
        g.remaining, g.status = D(0), "voided"

    @rule(amount=amounts, forward=st.booleans())
    def transfer(self, amount, forward):
        source, target = ("a", "b") if forward else ("b", "a")
        usable = [g for g in self.grants.values()
                  if g.wallet == source and g.status == "active" and g.remaining > 0 and g.region is None]  # fmt: skip
        available = sum((g.remaining for g in usable), D(0))
        try:
            tx = services.transfer(source=self.wallets[source], target=self.wallets[target], amount=amount,
                                   actor=STAFF, idempotency_key=self.key())  # fmt: skip
        except errors.InsufficientFunds:
            assert amount > available
            return
        usable.sort(key=ModelGrant.order)
        left = amount
        received = []
        for g, pk in zip(
            [g for g in usable if g.remaining > 0], tx.metadata["received_grants"], strict=False
        ):
            part = min(left, g.remaining)
            g.remaining -= part
            g.status = "exhausted" if g.remaining == 0 else "active"
            left -= part
            # each part arrives as its own grant, keeping the sender grant's expiry
            received.append(ModelGrant(target, part, "active", 100, False, None, g.expires, pk,
                                       g.expires_at, source=g.pk))  # fmt: skip
        assert left == 0 and len(received) == len(tx.metadata["received_grants"])
        for r in sorted(received, key=ModelGrant.order):
            self.grants[r.pk] = r
            self.pay_debt_from(target, r)
            r.status = "exhausted" if r.remaining == 0 else "active"

    @precondition(lambda self: self.usages)
    @rule(data=st.data())
    def reverse_usage(self, data):
        tx_id, w, lots, to_debt = data.draw(st.sampled_from(self.usages))
        self.usages.remove((tx_id, w, lots, to_debt))
        services.reverse(transaction_id=tx_id, actor=STAFF, idempotency_key=self.key())
        for pk, part in lots.items():
            g = self.grants[pk]
            if g.status in ("active", "exhausted"):
                g.remaining += part
                g.status = "active"
        back = min(self.debt[w], to_debt)
        self.debt[w] -= back
        if to_debt > back:  # debt since paid: the excess becomes a credit on account
            refund = CreditGrant.objects.filter(
                wallet=self.wallets[w], kind="payment_on_account"
            ).latest("id")
            self.grants[refund.pk] = ModelGrant(
                w, to_debt - back, "active", 100, False, None, False, refund.pk, refund.expires_at
            )

    @invariant()
    def balances_match_the_model_and_the_ledger(self):
        for name, wallet in self.wallets.items():
            fresh = Wallet.objects.get(pk=wallet.pk)
            assert fresh.credit_balance == self.balance(name)
            assert fresh.restricted_balance == self.balance(name, restricted=True)
            assert fresh.debt == self.debt[name]
            assert fresh.debt <= fresh.effective_credit_limit()  # no limit lapses in this model
        for pk, g in self.grants.items():
            assert CreditGrant.objects.get(pk=pk).remaining == g.remaining
        assert find_problems() == []


@pytest.mark.django_db
def test_random_operation_sequences_keep_the_ledger_exact(alice):
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),  # fmt: skip
    )
