import re
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing.models import ProductItem
from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import CreditGrant, Entry, LedgerTransaction

D = Decimal


def refresh(*objs):
    for obj in objs:
        obj.refresh_from_db()


@pytest.mark.django_db
def test_draws_from_one_grant_and_updates_every_balance(wallet, grant, ledger_ok):
    g = grant(wallet, "10")
    result = services.draw_down(wallet=wallet, amount=D("2.5"), actor=STAFF, idempotency_key="u1")
    refresh(g, wallet)
    assert (result.from_credits, result.to_debt) == (D("2.5"), D("0"))
    assert result.lots == ((g.pk, D("2.5")),)
    assert g.remaining == D("7.5") and g.status == "active"
    assert wallet.credit_balance == D("7.5") and result.balance_after == D("7.5")
    tx = LedgerTransaction.objects.get(pk=result.transaction_id)
    assert tx.kind == "usage" and tx.balance_after == D("7.5") and tx.debt_after == 0
    assert [(e.debit_account_id, e.amount) for e in tx.entries.all()] == [(g.account_id, D("2.5"))]
    ledger_ok()


@pytest.mark.django_db
def test_tiny_rates_draw_down_exactly(wallet, grant, ledger_ok):
    grant(wallet, "1")
    for i in range(25):
        services.draw_down(
            wallet=wallet, amount=D("0.0001"), actor=STAFF, idempotency_key=f"tiny{i}"
        )
    refresh(wallet)
    assert wallet.credit_balance == D("0.9975")
    ledger_ok()


@pytest.mark.django_db
def test_spans_grants_and_exhausts_them(wallet, grant, ledger_ok):
    first = grant(wallet, "3", priority=1)
    second = grant(wallet, "5", priority=2)
    result = services.draw_down(wallet=wallet, amount=D("4"), actor=STAFF, idempotency_key="u1")
    refresh(first, second, wallet)
    assert result.lots == ((first.pk, D("3")), (second.pk, D("1")))
    assert first.status == "exhausted" and first.remaining == 0
    assert second.remaining == D("4")
    ledger_ok()


@pytest.mark.django_db
def test_draw_down_order_specific_then_priority_then_expiry_then_free_then_oldest(
    wallet, grant, ledger_ok
):
    calls = ProductItem.objects.create(code="calls", name="Calls")
    now = timezone.now()
    paid_late = grant(wallet, "1", expires_at=now + timedelta(days=30))
    paid_early = grant(wallet, "1", expires_at=now + timedelta(days=5))
    free_early = grant(wallet, "1", kind="free", expires_at=now + timedelta(days=5))
    no_expiry = grant(wallet, "1")
    high_priority = grant(wallet, "1", priority=10)
    item_only = grant(wallet, "1", condition_item=calls)
    item_and_region = grant(
        wallet, "1", condition_item=calls, condition_dimensions={"region": "eu"}
    )
    expected = [
        item_and_region,
        item_only,
        high_priority,
        free_early,
        paid_early,
        paid_late,
        no_expiry,
    ]

    result = services.draw_down(
        wallet=wallet,
        amount=D("7"),
        actor=STAFF,
        idempotency_key="u1",
        item_id=calls.pk,
        dimensions={"region": "eu"},
    )
    assert [grant_id for grant_id, _ in result.lots] == [g.pk for g in expected]
    # the Python ordering used by transfers agrees with the SQL one
    fresh = CreditGrant.objects.filter(pk__in=[g.pk for g in expected])
    assert sorted(fresh, key=services.draw_order) == expected
    ledger_ok()


@pytest.mark.django_db
def test_conditional_grants_only_pay_for_matching_usage(wallet, grant, ledger_ok):
    calls = ProductItem.objects.create(code="calls", name="Calls")
    sms = ProductItem.objects.create(code="sms", name="SMS")
    eu_calls = grant(wallet, "5", condition_item=calls, condition_dimensions={"region": "eu"})
    general = grant(wallet, "5")

    us = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="a",
                            item_id=calls.pk, dimensions={"region": "us"})  # fmt: skip
    text = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="b",
                              item_id=sms.pk, dimensions={"region": "eu"})  # fmt: skip
    eu = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="c",
                            item_id=calls.pk, dimensions={"region": "eu", "tier": 2})  # fmt: skip
    assert us.lots == ((general.pk, D("1")),)
    assert text.lots == ((general.pk, D("1")),)
    assert eu.lots == ((eu_calls.pk, D("1")),)
    refresh(wallet)
    assert wallet.restricted_balance == D("4")
    assert wallet.available_funds() == D("3")  # restricted credit is not "available funds"
    ledger_ok()


@pytest.mark.django_db
def test_remainder_becomes_debt_within_the_credit_limit(wallet, grant, ledger_ok):
    grant(wallet, "2")
    services.change_permanent_limit(wallet=wallet, limit=D("5"), actor=STAFF, reason="trusted")
    result = services.draw_down(wallet=wallet, amount=D("6"), actor=STAFF, idempotency_key="u1")
    refresh(wallet)
    assert (result.from_credits, result.to_debt) == (D("2"), D("4"))
    assert wallet.debt == D("4") and wallet.available_funds() == D("1")
    tx = LedgerTransaction.objects.get(pk=result.transaction_id)
    assert sorted(e.amount for e in tx.entries.all()) == [D("2"), D("4")]
    ledger_ok()


@pytest.mark.django_db
def test_prepaid_wallet_without_limit_refuses_and_books_nothing(wallet, grant, ledger_ok):
    grant(wallet, "2")
    before = (LedgerTransaction.objects.count(), Entry.objects.count())
    with pytest.raises(errors.InsufficientFunds) as excinfo:
        services.draw_down(wallet=wallet, amount=D("2.01"), actor=STAFF, idempotency_key="u1")
    assert "costs 2.010000 USD" in str(excinfo.value) and "Top up" in str(excinfo.value)
    assert excinfo.value.available == D("2")
    assert (LedgerTransaction.objects.count(), Entry.objects.count()) == before
    refresh(wallet)
    assert wallet.credit_balance == D("2")
    # the same key can be used once the wallet has funds: nothing was recorded under it
    grant(wallet, "1")
    services.draw_down(wallet=wallet, amount=D("2.01"), actor=STAFF, idempotency_key="u1")
    ledger_ok()


@pytest.mark.django_db
def test_same_key_replays_the_first_answer_and_books_nothing(wallet, grant, ledger_ok):
    grant(wallet, "10")
    first = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u1")
    again = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u1")
    assert again.replayed and again.transaction_id == first.transaction_id
    assert again.lots == first.lots
    refresh(wallet)
    assert wallet.credit_balance == D("9")
    with pytest.raises(errors.IdempotencyConflict, match="different request"):
        services.draw_down(wallet=wallet, amount=D("2"), actor=STAFF, idempotency_key="u1")
    ledger_ok()


@pytest.mark.django_db
def test_expired_and_future_grants_are_not_drawn(wallet, grant, ledger_ok):
    now = timezone.now()
    expiring = grant(wallet, "5", expires_at=now + timedelta(hours=1))
    future = grant(wallet, "5", effective_at=now + timedelta(days=1))
    current = grant(wallet, "5")
    with time_machine.travel(now + timedelta(hours=2)):
        result = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u1")
    assert result.lots == ((current.pk, D("1")),)
    assert {expiring.pk, future.pk}.isdisjoint(g for g, _ in result.lots)
    ledger_ok()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (D("0"), "greater than zero"),
        (D("-1"), "greater than zero"),
        (D("0.0000001"), "more than 6 decimal places"),
        ("abc", "must be a number"),
        (1.5, "not a float"),
        (D("NaN"), "finite"),
    ],
)
def test_bad_amounts_are_refused_with_a_clear_message(wallet, grant, amount, message):
    grant(wallet, "10")
    with pytest.raises(errors.InvalidAmount, match=message):
        services.draw_down(wallet=wallet, amount=amount, actor=STAFF, idempotency_key="bad")
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


@pytest.mark.django_db
def test_unknown_wallet_and_bad_dimensions(wallet, grant):
    with pytest.raises(errors.WalletNotFound, match="does not exist"):
        services.draw_down(wallet=999999, amount=D("1"), actor=STAFF, idempotency_key="x")
    with pytest.raises(errors.WalletError, match="string or an integer"):
        services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="y",
                           dimensions={"region": ["eu"]})  # fmt: skip
    with pytest.raises(errors.WalletError, match="idempotency_key"):
        services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key=" ")
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


@pytest.mark.django_db
def test_batch_books_each_charge_on_its_own_under_one_lock(wallet, grant, ledger_ok):
    calls = ProductItem.objects.create(code="calls", name="Calls")
    eu = grant(wallet, "1", condition_item=calls, condition_dimensions={"region": "eu"})
    general = grant(wallet, "2")
    services.draw_down(wallet=wallet, amount=D("0.5"), actor=STAFF, idempotency_key="seen")
    charges = [
        services.UsageCharge(
            amount=D("0.8"), idempotency_key="b1", item_id=calls.pk, dimensions={"region": "eu"}
        ),
        services.UsageCharge(amount=D("-1"), idempotency_key="b2"),
        services.UsageCharge(amount=D("0.5"), idempotency_key="seen"),
        services.UsageCharge(amount=D("9"), idempotency_key="b3"),
        services.UsageCharge(amount=D("1"), idempotency_key="b4"),
        services.UsageCharge(amount=D("0.7"), idempotency_key="seen"),
    ]
    results = services.draw_down_batch(wallet=wallet, charges=charges, actor=STAFF)
    assert results[0].lots == ((eu.pk, D("0.8")),)
    assert isinstance(results[1], errors.InvalidAmount)
    assert results[2].replayed
    assert isinstance(results[3], errors.InsufficientFunds)
    assert results[4].lots == ((general.pk, D("1")),) and results[4].balance_after == D("0.7")
    assert isinstance(results[5], errors.IdempotencyConflict)
    wallet.refresh_from_db()
    assert wallet.credit_balance == D("0.7") and wallet.restricted_balance == D("0.2")
    ledger_ok()


@pytest.mark.django_db
def test_temporary_increase_counts_until_valid_until(wallet, grant, ledger_ok):
    from wallets.models import Wallet

    until = timezone.now() + timedelta(days=1)
    Wallet.objects.filter(pk=wallet.pk).update(
        credit_limit=D("10"), temporary_credit_increase=D("5"), temporary_increase_valid_until=until
    )
    services.draw_down(wallet=wallet, amount=D("14"), actor=STAFF, idempotency_key="u1")
    with time_machine.travel(until + timedelta(seconds=1)):
        with pytest.raises(errors.InsufficientFunds, match="credit limit room 0"):
            services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u2")
    wallet.refresh_from_db()
    assert wallet.debt == D("14")


@pytest.mark.django_db
def test_a_replay_answers_even_when_the_wallet_could_not_afford_it_now(wallet, grant):
    grant(wallet, "1")
    first = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u1")
    again = services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u1")
    assert again.replayed and again.transaction_id == first.transaction_id


def _booked(wallet):
    """What the ledger holds for a wallet's usage, in booking order, without ids."""
    grants = {
        g.pk: i for i, g in enumerate(CreditGrant.objects.filter(wallet=wallet).order_by("id"))
    }
    return [
        (tx.amount, tx.balance_after, tx.restricted_after, tx.debt_after,
         [(grants[lot.grant_id], lot.amount) for lot in tx.lots.order_by("id")])
        for tx in LedgerTransaction.objects.filter(wallet=wallet, kind="usage").order_by("id")
    ]  # fmt: skip


@pytest.mark.django_db
def test_a_batch_of_alike_charges_books_as_the_same_charges_one_by_one(
    wallet, bob_wallet, grant, ledger_ok
):
    """Migration 0007's set-based path (alike charges, paid in full by the grants)
    books exactly what the event-by-event loop books for the same charges: each
    charge takes the next stretch of credit in draw-down order, across grants,
    exhausting them, with the running balances."""
    calls = ProductItem.objects.create(code="calls", name="Calls")
    for w in (wallet, bob_wallet):
        grant(w, "0.25", condition_item=calls, priority=1)  # restricted: drawn first
        grant(w, "1.1", priority=5)
        grant(w, "50", priority=9)
    amounts = [D("0.1"), D("0.2"), D("0.35"), D("0.000001"), D("0.7"), D("0.45"), D("0.3")]

    def charge(who, n, amount):
        return services.UsageCharge(amount=amount, idempotency_key=f"{who}-{n}", item_id=calls.pk,
                                    dimensions={"region": "eu"}, memo="calls")  # fmt: skip

    batch = services.draw_down_batch(
        wallet=wallet, charges=[charge("a", n, a) for n, a in enumerate(amounts)], actor=STAFF
    )
    one_by_one = [
        services.draw_down_batch(wallet=bob_wallet, charges=[charge("b", n, a)], actor=STAFF)[0]
        for n, a in enumerate(amounts)
    ]

    assert _booked(wallet) == _booked(bob_wallet)
    for fast, slow in zip(batch, one_by_one, strict=True):
        assert isinstance(fast, services.DrawDown) and isinstance(slow, services.DrawDown)
        assert (fast.amount, fast.from_credits, fast.to_debt, fast.balance_after,
                fast.debt_after, fast.restricted_after, fast.credit_limit) == (
            slow.amount, slow.from_credits, slow.to_debt, slow.balance_after,
            slow.debt_after, slow.restricted_after, slow.credit_limit)  # fmt: skip
        assert len(fast.lots) == len(slow.lots)
    refresh(wallet, bob_wallet)
    assert (wallet.credit_balance, wallet.restricted_balance) == (
        bob_wallet.credit_balance,
        bob_wallet.restricted_balance,
    )
    assert wallet.restricted_balance == 0 and wallet.credit_balance == D("51.35") - sum(amounts)
    statuses = list(
        CreditGrant.objects.filter(wallet=wallet).order_by("id").values_list("status", flat=True)
    )
    assert statuses == ["exhausted", "exhausted", "active"]
    assert batch[-1].available_after == wallet.available_funds()
    # The same batch again replays every charge (and books nothing).
    again = services.draw_down_batch(
        wallet=wallet, charges=[charge("a", n, a) for n, a in enumerate(amounts)], actor=STAFF
    )
    assert all(isinstance(r, services.DrawDown) and r.replayed for r in again)
    assert len(_booked(wallet)) == len(amounts)
    ledger_ok()


@pytest.mark.django_db
def test_a_batch_the_grants_cannot_pay_in_full_goes_event_by_event(wallet, grant, ledger_ok):
    from wallets.models import Wallet

    Wallet.objects.filter(pk=wallet.pk).update(credit_limit=D("1"))
    grant(wallet, "1")
    charges = [services.UsageCharge(amount=D("0.8"), idempotency_key=f"c{n}") for n in range(3)]
    results = services.draw_down_batch(wallet=wallet, charges=charges, actor=STAFF)
    assert [r.to_debt for r in results[:2]] == [D("0"), D("0.6")]  # type: ignore[union-attr]
    assert isinstance(results[2], errors.InsufficientFunds)
    assert results[1].available_after == D("0.4")  # type: ignore[union-attr]


@pytest.mark.django_db
def test_draw_down_and_a_batch_of_one_book_the_same_ledger(wallet, bob_wallet, grant, ledger_ok):
    """`draw_down` calls its own one-event SQL function (migrations 0008, 0009), the batch
    the batch function (0003): the same scenario through each gives the same answers,
    rows and request fingerprints, and a key booked by one path replays in the other."""
    from wallets.models import Wallet

    calls = ProductItem.objects.create(code="calls", name="Calls")
    scenario = [  # (key, amount, item, dimensions, reference)
        ("a", D("0.8"), calls, {"region": "eu"}, "ev-1"),  # the conditional grant pays
        ("b", D("1.5"), None, None, ""),  # spans grants
        ("c", D("4"), None, None, "ev-3"),  # partly debt, within the limit
        ("d", D("50"), None, None, ""),  # refused
        ("b", D("1.5"), None, None, ""),  # replay
        ("c", D("9"), None, None, "ev-3"),  # conflict
    ]

    def run(target, one_by_one):
        prefix = "one" if one_by_one else "batch"
        Wallet.objects.filter(pk=target.pk).update(credit_limit=D("5"))
        grant(target, "1", condition_item=calls, condition_dimensions={"region": "eu"})
        grant(target, "1", priority=1)
        grant(target, "2", priority=2)
        answers = []
        for key, amount, item, dims, ref in scenario:
            kwargs = dict(amount=amount, idempotency_key=f"{prefix}:{key}",
                          item_id=item and item.pk, dimensions=dims, reference=ref)  # fmt: skip
            if one_by_one:
                try:
                    result = services.draw_down(wallet=target, actor=STAFF, **kwargs)
                except errors.WalletError as exc:
                    result = exc
            else:
                (result,) = services.draw_down_batch(
                    wallet=target, charges=[services.UsageCharge(**kwargs)], actor=STAFF
                )
            if isinstance(result, errors.WalletError):
                message = re.sub(r"#\d+", "#N", str(result).replace(prefix, "P"))
                answers.append((type(result).__name__, message))
            else:
                answers.append((result.amount, result.from_credits, result.to_debt,
                                [a for _, a in result.lots], result.balance_after,
                                result.debt_after, result.replayed, result.restricted_after,
                                result.credit_limit, result.available_after))  # fmt: skip
        rows = [
            (tx.amount, tx.balance_after, tx.restricted_after, tx.debt_after, tx.reference,
             sorted(e.amount for e in tx.entries.all()), sorted(lot.amount for lot in tx.lots.all()))
            for tx in LedgerTransaction.objects.filter(wallet=target, kind="usage").order_by("id")
        ]  # fmt: skip
        return answers, rows

    one, batch = run(wallet, one_by_one=True), run(bob_wallet, one_by_one=False)
    assert one == batch
    # both answer the wallet's figures after each booked event (migration 0009)
    booked = [a for a in one[0] if isinstance(a[0], D) and not a[6]]
    assert booked and all(a[9] is not None for a in booked)
    assert booked[0][7] == D("0.2")  # the conditional grant (1) paid 0.8 of the first event
    assert booked[-1][9] == Wallet.objects.get(pk=wallet.pk).available_funds()
    # the fingerprint is the same on both paths: each replays the other's key
    (again,) = services.draw_down_batch(
        wallet=wallet,
        charges=[services.UsageCharge(amount=D("1.5"), idempotency_key="one:b")],
        actor=STAFF,
    )
    assert again.replayed
    assert services.draw_down(
        wallet=bob_wallet, amount=D("0.8"), actor=STAFF, idempotency_key="batch:a",
        item_id=calls.pk, dimensions={"region": "eu"}, reference="ev-1",
    ).replayed  # fmt: skip
    ledger_ok()
