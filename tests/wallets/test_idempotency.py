"""An idempotency key repeated with ANY different argument is a conflict, never a
silent replay; repeated with the same arguments it replays (issue 12, "also fix").
One table per service: the first call's arguments, then each changed argument."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import ProductItem
from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import Wallet

D = Decimal
pytestmark = pytest.mark.django_db

SOON = timezone.now() + timedelta(days=30)


def conflicts(call, base, changes):
    """`call(**base)` books; the same again replays; each change is a conflict."""
    first = call(**base)
    assert call(**base) == first
    for name, value in changes.items():
        with pytest.raises(errors.IdempotencyConflict, match="already used"):
            call(**{**base, name: value})
    return first


def test_grant_credit(wallet):
    item = ProductItem.objects.create(code="sms", name="SMS", unit="message")
    start = timezone.now() + timedelta(hours=1)
    base = dict(wallet=wallet, amount=D("10"), kind="paid", name="Pack", actor=STAFF,
                idempotency_key="g1", effective_at=start, expires_at=start + timedelta(days=9))  # fmt: skip
    conflicts(services.grant_credit, base, {
        "amount": D("11"), "kind": "free", "name": "Other pack", "pending": True,
        "funding": "psp_clearing", "effective_at": start + timedelta(minutes=1),
        "expires_at": start + timedelta(days=8), "priority": 5, "condition_item": item,
        "condition_dimensions": {"region": "eu"}, "source_type": "invoice", "source_id": "7",
        "external_transaction_id": "bank-9", "memo": "another memo", "apply_to_debt": False,
    })  # fmt: skip


def test_grant_credit_times_compare_as_instants(wallet):
    """The same instant written in another time zone is the same request."""
    from zoneinfo import ZoneInfo

    start = timezone.now().replace(microsecond=0) + timedelta(hours=1)
    base = dict(wallet=wallet, amount=D("10"), kind="paid", name="Pack", actor=STAFF,
                idempotency_key="g1", effective_at=start)  # fmt: skip
    first = services.grant_credit(**base)
    paris = start.astimezone(ZoneInfo("Europe/Paris"))
    assert services.grant_credit(**{**base, "effective_at": paris}) == first


def test_draw_down_and_batch(wallet, grant):
    grant(wallet, "100", effective_at=timezone.now() - timedelta(days=1))
    at = timezone.now() - timedelta(minutes=5)
    base = dict(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u1", at=at,
                memo="calls", reference="ev-1", metadata={"usage_event": "ev-1"})  # fmt: skip
    changes = {"amount": D("2"), "at": at - timedelta(seconds=1), "memo": "other",
               "reference": "ev-2", "metadata": {"usage_event": "ev-2"},
               "dimensions": {"region": "eu"}, "item_id": 999}  # fmt: skip
    first = services.draw_down(**base)
    assert services.draw_down(**base).transaction_id == first.transaction_id
    for name, value in changes.items():
        with pytest.raises(errors.IdempotencyConflict):
            services.draw_down(**{**base, name: value})
        charge = {k: v for k, v in base.items() if k not in ("wallet", "actor")}
        (result,) = services.draw_down_batch(
            wallet=wallet, actor=STAFF, charges=[services.UsageCharge(**{**charge, name: value})]
        )
        assert isinstance(result, errors.IdempotencyConflict), (name, result)


def test_activate_void_and_expire(wallet, grant):
    pending = grant(wallet, "10", pending=True)
    conflicts(services.activate_grant, dict(
        grant=pending, external_transaction_id="bank-1", actor=STAFF, idempotency_key="a1",
    ), {"external_transaction_id": "bank-2", "funding": "psp_clearing", "apply_to_debt": False})  # fmt: skip
    other = grant(wallet, "5")
    conflicts(services.void_grant, dict(grant=other, actor=STAFF, idempotency_key="v1",
                                        reason="mistake"), {"reason": "another reason"})  # fmt: skip


def test_debt_payment_settlement_and_rounding(wallet, grant):
    Wallet.objects.filter(pk=wallet.pk).update(credit_limit=D("100"))
    services.draw_down(wallet=wallet, amount=D("50"), actor=STAFF, idempotency_key="u1")
    conflicts(services.record_debt_payment, dict(
        wallet=wallet, amount=D("10"), actor=STAFF, idempotency_key="p1", memo="wire",
        reference="bank-1",
    ), {"amount": D("11"), "funding": "psp_clearing", "memo": "cash", "reference": "bank-2"})  # fmt: skip
    conflicts(services.round_debt, dict(
        wallet=wallet, exact=D("39.996"), quantum=D("0.01"), actor=STAFF, idempotency_key="r1",
        memo="inv 1",
    ), {"exact": D("39.997"), "quantum": D("0.1"), "newer": D("1"), "memo": "inv 2"})  # fmt: skip
    grant(wallet, "5", apply_to_debt=False)
    conflicts(services.settle_debt, dict(
        wallet=wallet, actor=STAFF, idempotency_key="s1", amount=D("1"),
    ), {"amount": D("2")})  # fmt: skip


def test_transfer_and_reverse(wallet, bob_wallet, grant):
    grant(wallet, "100")
    tx = conflicts(services.transfer, dict(
        source=wallet, target=bob_wallet, amount=D("10"), actor=STAFF, idempotency_key="t1",
        memo="gift", expires_at=SOON, enforce_policy=False,
    ), {"amount": D("11"), "memo": "other", "expires_at": SOON - timedelta(days=1),
        "enforce_policy": True})  # fmt: skip
    conflicts(services.reverse, dict(
        transaction_id=tx.pk, actor=STAFF, idempotency_key="r1", memo="undo",
    ), {"memo": "undo it"})  # fmt: skip
