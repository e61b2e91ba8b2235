"""billing.usage: rating, real-time draw-down, idempotency, refusals, reversal."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing.errors import UsageConflict, UsageNotReversible, UsageRefused, UsageRejected
from billing.models import Customer, ProductItem, UsageEvent
from billing.usage.recording import (
    UsageInput,
    rate,
    record_usage,
    record_usage_batch,
    reverse_usage,
)
from wallets import services
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, LedgerTransaction, Wallet

D = Decimal
METER = Actor.system("meter")
pytestmark = pytest.mark.django_db


def send(customer, quantity="1", *, event_id="e1", product="api-calls", **fields):
    return record_usage(
        event=UsageInput(
            event_id=event_id,
            customer=customer.account_number,
            product=product,
            quantity=D(quantity) if isinstance(quantity, str) else quantity,
            **fields,
        ),
        actor=METER,
    )


def wallet_of(customer) -> Wallet:
    return Wallet.objects.get(customer=customer)


def problems(exc_info) -> dict[str, str]:
    return {p.field: p.message for p in exc_info.value.problems}


# --- rating ------------------------------------------------------------------------------


def test_amount_is_quantity_times_unit_price_and_the_grant_pays(alice, calls, price, credit):
    price(calls, "0.25")
    grant = credit(alice, "10")

    outcome = send(alice, "3")

    answer = outcome.response
    assert (answer["unit_price"], answer["amount"], answer["currency"]) == ("0.25", "0.75", "USD")
    assert answer["grants"] == [{"grant_id": grant.pk, "amount": "0.75"}]
    assert (answer["from_credits"], answer["to_debt"]) == ("0.75", "0")
    assert (answer["credit_balance"], answer["available_funds"]) == ("9.25", "9.25")
    assert answer["status"] == "booked" and not outcome.replayed
    event = UsageEvent.objects.get()
    assert (event.amount, event.unit_price, event.status) == (D("0.75"), D("0.25"), "booked")
    tx = LedgerTransaction.objects.get(pk=event.transaction_id)
    assert tx.kind == "usage" and tx.amount == D("0.75") and tx.reference == "e1"
    assert tx.idempotency_key == f"usage:{alice.pk}:e1"
    assert find_problems() == []


def test_dimension_specific_price_beats_the_generic_one(alice, calls, price, credit):
    price(calls, "1")
    price(calls, "0.4", dimensions={"region": "eu"})
    price(calls, "0.3", dimensions={"region": "eu", "tier": "2"})
    credit(alice, "100")

    assert send(alice, event_id="us", dimensions={"region": "us"}).response["unit_price"] == "1"
    assert send(alice, event_id="eu", dimensions={"region": "eu"}).response["unit_price"] == "0.4"
    most_specific = send(alice, event_id="eu2", dimensions={"region": "eu", "tier": 2})
    assert most_specific.response["unit_price"] == "0.3"  # integers compare as strings
    assert send(alice, event_id="none").response["unit_price"] == "1"


def test_the_price_in_force_at_the_event_time_applies_latest_first(alice, calls, price, credit):
    now = timezone.now()
    price(
        calls, "1", effective_from=now - timedelta(days=60), effective_to=now - timedelta(days=10)
    )
    price(calls, "2", effective_from=now - timedelta(days=10))
    price(calls, "3", effective_from=now - timedelta(days=5))  # a later price overrides
    price(calls, "9", effective_from=now + timedelta(days=1))  # not yet
    credit(alice, "100", effective_at=now - timedelta(days=90))

    old = send(alice, event_id="old", timestamp=now - timedelta(days=20))
    middle = send(alice, event_id="mid", timestamp=now - timedelta(days=7))
    current = send(alice, event_id="now")

    assert [o.response["unit_price"] for o in (old, middle, current)] == ["1", "2", "3"]
    # the period end is exclusive
    edge = send(alice, event_id="edge", timestamp=now - timedelta(days=10))
    assert edge.response["unit_price"] == "2"


def test_prices_in_other_currencies_are_ignored(alice, calls, price, credit):
    price(calls, "0.1", currency="EUR")
    credit(alice, "10")

    with pytest.raises(UsageRejected) as exc:
        send(alice)

    assert "has no price in USD" in problems(exc)["product"]
    assert not UsageEvent.objects.exists()


def test_rounding_is_half_up_to_six_places_once_per_event(alice, calls, price, credit):
    assert rate(D("0.5"), D("0.000001")) == D("0.000001")
    assert rate(D("0.4"), D("0.000001")) == D("0")
    assert rate(D("3"), D("0.333333")) == D("0.999999")
    price(calls, "0.000003")
    credit(alice, "1")

    assert send(alice, "0.5", event_id="a").response["amount"] == "0.000002"  # 0.0000015 ↑


def test_usage_that_rates_to_zero_is_recorded_without_a_draw_down(alice, calls, price, credit):
    price(calls, "0")
    credit(alice, "1")

    outcome = send(alice, "1000")

    assert outcome.response["amount"] == "0" and outcome.response["transaction_id"] is None
    assert UsageEvent.objects.get().status == "booked"
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


# --- draw-down integration --------------------------------------------------------------


def test_conditional_grants_pay_only_for_matching_usage(alice, calls, price, credit):
    storage = ProductItem.objects.create(code="storage", name="Storage", unit="GB")
    price(calls, "1")
    price(storage, "1")
    eu_calls = credit(alice, "5", condition_item=calls, condition_dimensions={"region": "eu"})
    any_calls = credit(alice, "5", condition_item=calls)
    general = credit(alice, "5")

    eu = send(alice, "2", event_id="eu", dimensions={"region": "eu"})
    us = send(alice, "2", event_id="us", dimensions={"region": "us"})
    disk = send(alice, "2", event_id="disk", product="storage")

    assert eu.response["grants"] == [{"grant_id": eu_calls.pk, "amount": "2"}]
    assert us.response["grants"] == [{"grant_id": any_calls.pk, "amount": "2"}]
    assert disk.response["grants"] == [{"grant_id": general.pk, "amount": "2"}]
    # available funds count only unrestricted credit
    assert disk.response["available_funds"] == "3"
    assert disk.response["credit_balance"] == "9"
    assert find_problems() == []


def test_draw_down_order_free_before_paid_and_spill_over(alice, calls, price, credit):
    price(calls, "1")
    # free before paid breaks a tie of expiry dates (every grant expires)
    expiry = timezone.now() + timedelta(days=30)
    paid = credit(alice, "2", expires_at=expiry)
    free = credit(alice, "2", kind="free", expires_at=expiry)

    outcome = send(alice, "3")

    assert outcome.response["grants"] == [
        {"grant_id": free.pk, "amount": "2"},
        {"grant_id": paid.pk, "amount": "1"},
    ]


def test_beyond_the_credits_usage_becomes_amount_due_within_the_credit_limit(
    charlie, calls, price, credit
):
    price(calls, "2", currency="EUR")
    grant = credit(charlie, "3")
    services.change_permanent_limit(
        wallet=wallet_of(charlie), limit=D("10"), actor=METER, reason="test"
    )

    outcome = send(charlie, "4")

    answer = outcome.response
    assert (answer["amount"], answer["from_credits"], answer["to_debt"]) == ("8", "3", "5")
    assert answer["grants"] == [{"grant_id": grant.pk, "amount": "3"}]
    assert (answer["debt"], answer["available_funds"]) == ("5", "5")
    assert find_problems() == []


def test_insufficient_funds_books_nothing_and_records_the_refusal(alice, calls, price, credit):
    price(calls, "1")
    credit(alice, "2")

    with pytest.raises(UsageRefused) as exc:
        send(alice, "5")

    assert exc.value.status_code == 402
    assert str(exc.value).startswith("insufficient funds: this usage costs 5.000000 USD")
    assert not LedgerTransaction.objects.filter(kind="usage").exists()
    event = UsageEvent.objects.get()
    assert event.status == "refused" and "insufficient funds" in event.message
    assert wallet_of(alice).credit_balance == D("2")


def test_a_refused_event_is_booked_when_sent_again_after_a_top_up(alice, calls, price, credit):
    price(calls, "1")
    credit(alice, "2")
    with pytest.raises(UsageRefused):
        send(alice, "5")

    credit(alice, "10")
    outcome = send(alice, "5")

    assert outcome.response["amount"] == "5" and not outcome.replayed
    event = UsageEvent.objects.get()
    assert event.status == "booked" and event.message == ""
    assert find_problems() == []


def test_grants_that_start_after_the_event_do_not_pay_for_it(alice, calls, price, credit):
    price(calls, "1")
    credit(alice, "10", effective_at=timezone.now())

    with pytest.raises(UsageRefused):
        send(alice, timestamp=timezone.now() - timedelta(hours=1))
    assert send(alice, event_id="later").response["amount"] == "1"


# --- idempotency -------------------------------------------------------------------------


def test_the_same_event_again_returns_the_first_answer_and_books_nothing(
    alice, calls, price, credit
):
    price(calls, "0.5")
    credit(alice, "10")
    at = timezone.now() - timedelta(minutes=1)

    first = send(alice, "2", timestamp=at)
    again = send(alice, "2", timestamp=at)

    assert again.replayed and again.response == first.response
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1
    assert wallet_of(alice).credit_balance == D("9")


def test_a_retry_without_timestamp_matches_and_a_price_change_does_not_rebill(
    alice, calls, price, credit
):
    generic = price(calls, "0.5")
    credit(alice, "10")
    first = send(alice, "2")

    generic.unit_price = D("9")
    generic.save()
    again = send(alice, "2")

    assert again.replayed and again.response["amount"] == first.response["amount"] == "1"


def test_the_same_event_id_for_another_event_is_a_conflict(alice, calls, price, credit):
    price(calls, "0.5")
    credit(alice, "10")
    send(alice, "2")

    with pytest.raises(UsageConflict) as exc:
        send(alice, "3")

    assert exc.value.status_code == 409
    assert "event_id 'e1' was already used for another event" in str(exc.value)
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1


def test_event_ids_are_scoped_per_customer(alice, bob, calls, price, credit):
    price(calls, "1")
    credit(alice, "10")
    credit(bob, "10")

    send(alice, event_id="same")
    send(bob, event_id="same")

    assert UsageEvent.objects.filter(event_id="same").count() == 2


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"customer": "NOPE"}, "customer", "no customer with account number 'NOPE'"),
        ({"customer": ""}, "customer", "send the customer's account number"),
        ({"product": "nope"}, "product", "no product item with code 'nope'"),
        ({"quantity": D("-1")}, "quantity", "must be greater than zero, got -1"),
        ({"quantity": D("0")}, "quantity", "must be greater than zero, got 0"),
        ({"quantity": D("0.0000001")}, "quantity", "use at most 6 decimal places"),
        ({"quantity": 1.5}, "quantity", "send a number as a string or an integer"),
        ({"quantity": True}, "quantity", "send a number as a string or an integer"),
        ({"quantity": "abc"}, "quantity", "must be a number, got 'abc'"),
        ({"quantity": D("NaN")}, "quantity", "must be a finite number"),
        ({"quantity": D("1e12")}, "quantity", "must be less than 1,000,000,000,000"),
        ({"dimensions": {"region": ["eu"]}}, "dimensions", "'region' must be a string or an integer, got a list"),
        ({"dimensions": {"region": 1.5}}, "dimensions", "got a decimal number (1.5)"),
        ({"dimensions": {"region": True}}, "dimensions", "got a boolean"),
        ({"dimensions": {"region": None}}, "dimensions", "got null"),
        ({"dimensions": ["eu"]}, "dimensions", "must be a JSON object"),
        ({"event_id": ""}, "event_id", "send a non-empty string"),
        ({"event_id": "x" * 201}, "event_id", "at most 200 characters"),
        ({"event_id": "a\nb"}, "event_id", "control characters"),
        ({"timestamp": "yesterday"}, "timestamp", "send an ISO 8601 time"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_per_field_and_nothing_is_booked(
    alice, calls, price, credit, fields, field, message
):
    price(calls, "1")
    credit(alice, "10")
    event = {"event_id": "e1", "customer": alice.account_number, "product": "api-calls",
             "quantity": D("1"), **fields}  # fmt: skip

    with pytest.raises(UsageRejected) as exc:
        record_usage(event=UsageInput(**event), actor=METER)

    assert exc.value.status_code == 422
    assert message in problems(exc)[field]
    assert not UsageEvent.objects.exists()
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


def test_every_problem_of_an_event_is_reported_at_once(alice, calls, price):
    with pytest.raises(UsageRejected) as exc:
        record_usage(
            event=UsageInput(event_id="", customer="NOPE", product="nope", quantity=D("-1")),
            actor=METER,
        )
    assert set(problems(exc)) == {"event_id", "customer", "product", "quantity"}


def test_timestamps_beyond_the_future_tolerance_are_refused(alice, calls, price, credit, settings):
    price(calls, "1")
    credit(alice, "10")
    now = timezone.now()

    with pytest.raises(UsageRejected) as exc:
        send(alice, timestamp=now + timedelta(minutes=10))
    assert "in the future; at most 5 minutes ahead is accepted" in problems(exc)["timestamp"]

    assert send(alice, event_id="skew", timestamp=now + timedelta(minutes=4)).response
    settings.USAGE_FUTURE_TOLERANCE_SECONDS = 0
    with pytest.raises(UsageRejected):
        send(alice, event_id="late", timestamp=now + timedelta(seconds=30))


def test_naive_timestamps_are_refused(alice, calls, price):
    price(calls, "1")
    with pytest.raises(UsageRejected) as exc:
        send(alice, timestamp=timezone.now().replace(tzinfo=None))
    assert "add a time zone" in problems(exc)["timestamp"]


def test_inactive_product_and_closed_customer_are_refused(alice, calls, price):
    price(calls, "1")
    ProductItem.objects.filter(pk=calls.pk).update(active=False)
    Customer.objects.filter(pk=alice.pk).update(status="closed")

    with pytest.raises(UsageRejected) as exc:
        send(alice)

    assert "is inactive" in problems(exc)["product"]
    assert "is closed; usage is accepted only for active customers" in problems(exc)["customer"]


# --- batches -----------------------------------------------------------------------------


def test_a_batch_books_valid_events_and_reports_invalid_ones(alice, bob, calls, price, credit):
    price(calls, "1")
    credit(alice, "3")
    credit(bob, "10")
    events = [
        UsageInput("a1", alice.account_number, "api-calls", D("1")),
        UsageInput("b1", bob.account_number, "api-calls", D("2")),
        UsageInput("bad", alice.account_number, "api-calls", D("-1")),
        UsageInput("a2", alice.account_number, "api-calls", D("5")),  # too much
        UsageInput("a3", alice.account_number, "nope", D("1")),
        UsageInput("a4", alice.account_number, "api-calls", D("2")),
        UsageInput("a1", alice.account_number, "api-calls", D("1")),  # a repeat
    ]

    results = record_usage_batch(events=events, actor=METER)

    kinds = [type(r).__name__ for r in results]
    assert kinds == ["UsageOutcome", "UsageOutcome", "UsageRejected", "UsageRefused",
                     "UsageRejected", "UsageOutcome", "UsageOutcome"]  # fmt: skip
    assert results[6].replayed and results[6].response == results[0].response
    assert wallet_of(alice).credit_balance == D("0")
    assert wallet_of(bob).credit_balance == D("8")
    assert LedgerTransaction.objects.filter(kind="usage").count() == 3
    assert find_problems() == []


def test_a_batch_that_is_too_big_or_empty_books_nothing(alice, calls, price, credit, settings):
    price(calls, "1")
    credit(alice, "10")
    settings.USAGE_BATCH_MAX_EVENTS = 2
    events = [UsageInput(f"e{i}", alice.account_number, "api-calls", D("1")) for i in range(3)]

    with pytest.raises(UsageRejected) as exc:
        record_usage_batch(events=events, actor=METER)
    assert "at most 2 events, got 3" in problems(exc)["events"]
    with pytest.raises(UsageRejected):
        record_usage_batch(events=[], actor=METER)
    assert not UsageEvent.objects.exists()


# --- reversal ----------------------------------------------------------------------------


def test_reversal_returns_the_credit_to_the_same_grants(alice, calls, price, credit):
    price(calls, "1")
    expiring = credit(alice, "3", expires_at=timezone.now() + timedelta(days=30))
    free = credit(alice, "2", kind="free")
    booked = send(alice, "4")
    assert booked.response["grants"] == [
        {"grant_id": expiring.pk, "amount": "3"},  # earliest expiry first
        {"grant_id": free.pk, "amount": "1"},
    ]

    reversal = reverse_usage(event=booked.event, actor=Actor.system("staff"))

    answer = reversal.response
    assert answer["status"] == "reversed" and answer["amount"] == "4"
    assert sorted((g["grant_id"], g["amount"]) for g in answer["grants"]) == sorted(
        [(expiring.pk, "3"), (free.pk, "1")]
    )
    assert answer["credit_balance"] == "5" and answer["available_funds"] == "5"
    expiring.refresh_from_db()
    free.refresh_from_db()
    assert (expiring.remaining, expiring.status) == (D("3"), "active")
    assert expiring.expires_at is not None  # its original expiry
    assert free.remaining == D("2")
    tx = LedgerTransaction.objects.get(pk=answer["transaction_id"])
    assert tx.kind == "reversal" and tx.reverses_id == booked.event.transaction_id
    event = UsageEvent.objects.get()
    assert event.status == "reversed" and event.reversed_by == "system:staff"
    assert find_problems() == []


def test_reversing_twice_returns_the_first_answer(alice, calls, price, credit):
    price(calls, "1")
    credit(alice, "5")
    booked = send(alice, "1")

    first = reverse_usage(event=booked.event, actor=METER)
    again = reverse_usage(event=booked.event.pk, actor=METER)

    assert again.replayed and again.response == first.response
    assert LedgerTransaction.objects.filter(kind="reversal").count() == 1


def test_sending_a_reversed_event_again_books_nothing(alice, calls, price, credit):
    price(calls, "1")
    credit(alice, "5")
    booked = send(alice, "1")
    reverse_usage(event=booked.event, actor=METER)

    again = send(alice, "1")

    assert again.replayed and again.response["status"] == "reversed"
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1


def test_reversal_cancels_the_debt_the_event_created(charlie, calls, price, credit):
    price(calls, "1", currency="EUR")
    credit(charlie, "1")
    services.change_permanent_limit(
        wallet=wallet_of(charlie), limit=D("10"), actor=METER, reason="test"
    )
    booked = send(charlie, "3")
    assert booked.response["debt"] == "2"

    answer = reverse_usage(event=booked.event, actor=METER).response

    assert (answer["debt"], answer["credit_balance"]) == ("0", "1")
    assert find_problems() == []


def test_a_refused_event_cannot_be_reversed(alice, calls, price, credit):
    price(calls, "1")
    with pytest.raises(UsageRefused):
        send(alice, "1")

    with pytest.raises(UsageNotReversible, match="nothing was booked"):
        reverse_usage(event=UsageEvent.objects.get(), actor=METER)


def test_credit_returned_to_a_grant_that_expired_goes_to_breakage(alice, calls, price, credit):
    price(calls, "1")
    grant = credit(alice, "5", expires_at=timezone.now() + timedelta(days=1))
    booked = send(alice, "2")
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        services.expire_grant(grant=grant, actor=METER)
        answer = reverse_usage(event=booked.event, actor=METER).response

    assert answer["credit_balance"] == "0"
    grant.refresh_from_db()
    assert grant.status == CreditGrant.Status.EXPIRED and grant.remaining == 0
    assert find_problems() == []


def test_a_draw_down_reversed_in_the_ledger_marks_the_event_reversed(alice, calls, price, credit):
    price(calls, "1")
    credit(alice, "5")
    booked = send(alice, "2")
    by_staff = services.reverse(
        transaction_id=booked.event.transaction_id, actor=METER, idempotency_key="staff-undo"
    )

    answer = reverse_usage(event=booked.event, actor=METER).response

    assert answer["transaction_id"] == by_staff.pk and answer["credit_balance"] == "5"
    assert LedgerTransaction.objects.filter(kind="reversal").count() == 1
    assert UsageEvent.objects.get().status == "reversed"


def test_each_answer_in_a_batch_shows_the_funds_right_after_that_event(alice, calls, price, credit):
    price(calls, "1")
    price(calls, "0", dimensions={"tier": "free"})
    credit(alice, "5", condition_item=calls, condition_dimensions={"region": "eu"})
    credit(alice, "5")
    events = [
        UsageInput("e1", alice.account_number, "api-calls", D("2"), {"region": "eu"}),
        UsageInput("e2", alice.account_number, "api-calls", D("1"), {"region": "us"}),
        UsageInput("free", alice.account_number, "api-calls", D("9"), {"tier": "free"}),
        UsageInput("e3", alice.account_number, "api-calls", D("4"), {"region": "eu"}),
        UsageInput("big", alice.account_number, "api-calls", D("50")),  # refused
        UsageInput("e4", alice.account_number, "api-calls", D("1")),
    ]

    results = record_usage_batch(events=events, actor=METER)

    figures = [
        (r.response["credit_balance"], r.response["available_funds"])
        for r in results
        if not isinstance(r, UsageRefused)
    ]
    # credit 10 = 5 restricted (EU calls) + 5 for anything; available counts the latter
    assert figures == [("8", "5"), ("7", "4"), ("7", "4"), ("3", "3"), ("2", "2")]
    assert isinstance(results[4], UsageRefused)
    assert find_problems() == []
