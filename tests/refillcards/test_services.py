"""Series generation, card edits, expiry and redemption (refillcards.services)."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from invoices.models import Payment
from refillcards import codes, services
from refillcards.errors import (
    REFUSED,
    CardRefused,
    CardStateError,
    IdempotencyConflict,
    InvalidSeries,
    RedemptionLocked,
    RefillCardsDisabled,
)
from refillcards.models import (
    CardExport,
    CardSeries,
    RedemptionAttempt,
    RefillCard,
    RefillCardSettings,
)
from refillcards.tasks import expire_cards, generate_series
from tests.factories import CustomerFactory, PartnerFactory
from tests.refillcards.conftest import STAFF, card_of
from wallets.models import CreditGrant, LedgerTransaction

pytestmark = pytest.mark.django_db
D = Decimal


def redeem(code, customer, channel="portal", **kwargs):
    kwargs.setdefault("client_ip", "192.0.2.10")
    return services.redeem_card(
        code=code, customer=customer, actor=STAFF, channel=channel, **kwargs
    )


def test_a_small_series_is_stored_at_once_with_serials_and_no_plain_code(series_of):
    series, plain = series_of(5)
    series.refresh_from_db()
    assert series.status == "ready" and series.generated == 5
    cards = list(series.cards.order_by("number"))
    assert [c.serial for c in cards] == [f"{series.pk:04d}-{n:06d}" for n in range(1, 6)]
    assert all(c.status == "active" and c.valid_until == series.valid_until for c in cards)
    assert all(c.full_code() == shown for c, shown in zip(cards, plain, strict=True))
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(c)::text FROM refillcards_refillcard c")
        dump = " ".join(row[0] for row in cursor.fetchall())
    for shown in plain:
        assert codes.normalise(shown) not in dump and shown not in dump
    # the export was logged
    assert CardExport.objects.get(series=series).cards == 5


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("quantity", {"quantity": 0}),
        ("quantity", {"quantity": 10**9}),
        ("price", {"amount": "-1"}),
        ("price", {"amount": "NaN"}),
        ("price", {"amount": "1.234"}),
        ("price", {"amount": "1e20"}),
        ("currency", {"currency": "XXX"}),
        ("prefix", {"prefix": "OIL"}),
        ("valid until", {"valid_until": timezone.now() - timedelta(days=1)}),
    ],
)
def test_bad_series_parameters_are_refused_naming_the_field(alice, field, kwargs):
    args = dict(prefix="NW", quantity=2, amount="5", currency="USD", partner=alice.partner,
                valid_until=timezone.now() + timedelta(days=1), actor=STAFF)  # fmt: skip
    with pytest.raises(InvalidSeries) as refused:
        services.create_series(**{**args, **kwargs})
    assert refused.value.field == field
    assert not CardSeries.objects.exists()


def test_a_large_series_is_generated_by_the_task_in_batches(
    alice, settings, django_capture_on_commit_callbacks
):
    settings.REFILL_CARD_SYNC_LIMIT = 10
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        series = services.create_series(
            prefix="", quantity=25, amount="1", currency="USD", partner=alice.partner,
            valid_until=timezone.now() + timedelta(days=1), actor=STAFF,
        )  # fmt: skip
    assert len(callbacks) == 1
    assert series.status == "generating" and not series.cards.exists()
    assert services.generate_next_batch(series.pk, batch_size=10) == 10
    series.refresh_from_db()
    assert (series.generated, series.status) == (10, "generating")
    assert generate_series(series.pk, batch_size=10) == 15
    assert generate_series(series.pk, batch_size=10) == 0  # again: nothing more
    series.refresh_from_db()
    assert (series.generated, series.status) == (25, "ready")
    assert sorted(series.cards.values_list("number", flat=True)) == list(range(1, 26))


def test_staff_redeem_for_a_customer_books_a_refill_card_grant_and_marks_the_card_used(
    series_of, alice, ledger_ok
):
    series, plain = series_of(2, amount="12.50")
    result = redeem(plain[0], alice, channel="staff")
    assert not result.replayed and result.amount == D("12.5")
    card = card_of(series, 1)
    assert card.status == "used" and card.used_by == alice and card.used_at is not None
    assert card.redeemed_by == STAFF.label and card.grant == result.grant
    grant = result.grant
    assert (grant.kind, grant.funding_code, grant.remaining) == (
        "refill_card",
        "refill_cards",
        D("12.5"),
    )
    assert grant.expires_at is not None
    assert result.wallet.credit_balance == D("12.5")
    assert LedgerTransaction.objects.filter(wallet=result.wallet).count() == 1
    payment = card.payment
    assert (payment.method, payment.amount, payment.currency) == ("refill_card", D("12.50"), "USD")
    assert payment.reference == card.serial and card.serial in payment.comment
    assert payment.customer == alice and payment.credit_grant == grant
    ledger_ok()


def test_the_same_request_again_replays_and_books_nothing(series_of, alice, ledger_ok):
    _, plain = series_of(1)
    first = redeem(plain[0], alice)
    again = redeem(plain[0].lower().replace("-", " "), alice)
    assert again.replayed and again.grant == first.grant
    assert CreditGrant.objects.count() == 1 and Payment.objects.count() == 1
    ledger_ok()


def test_api_idempotency_key_reused_for_another_card_is_a_conflict(series_of, alice):
    _, plain = series_of(2)
    redeem(plain[0], alice, channel="api", idempotency_key="api:1:k")
    with pytest.raises(IdempotencyConflict):
        redeem(plain[1], alice, channel="api", idempotency_key="api:1:k")
    assert card_of(plain and RefillCard.objects.first().series, 2).status == "active"


def test_every_refusal_gives_the_same_answer(series_of, alice, bob):
    other_partner = CustomerFactory(partner=PartnerFactory(name="Contoso"))
    euro = CustomerFactory(partner=alice.partner, currency="EUR")
    series, plain = series_of(4)
    redeem(plain[0], bob, channel="staff")  # used
    services.set_cards_status(cards=[card_of(series, 2).pk], status="disabled", actor=STAFF)
    RefillCard.objects.filter(pk=card_of(series, 3).pk).update(valid_until=timezone.now())
    body = codes.normalise(plain[3])
    typo = body[:-2] + ("0" if body[-2] != "0" else "1") + body[-1]
    unknown = codes.new_code("NW")
    cases = [
        (plain[0], alice, "used"), (plain[1], alice, "disabled"), (plain[2], alice, "expired"),
        (plain[3], other_partner, "other_partner"), (plain[3], euro, "currency"),
        (typo, alice, "malformed"), (unknown, alice, "unknown"),
    ]  # fmt: skip
    for code, customer, reason in cases:
        with pytest.raises(CardRefused) as refused:
            redeem(code, customer, channel="staff")
        assert str(refused.value) == REFUSED and refused.value.reason == reason
    logged = list(RedemptionAttempt.objects.order_by("id").values_list("outcome", flat=True))
    assert logged == ["redeemed"] + [reason for *_, reason in cases]
    assert card_of(series, 4).status == "active"


def test_portal_switch_of_the_partner(series_of, alice):
    _, plain = series_of(1)
    alice.partner.refill_cards_in_portal = False
    alice.partner.save()
    with pytest.raises(CardRefused) as refused:
        redeem(plain[0], alice, channel="portal")
    assert refused.value.reason == "portal_off"
    assert redeem(plain[0], alice, channel="staff").card.status == "used"


def test_the_global_switch_stops_generation_and_redemption(series_of, alice):
    _, plain = series_of(1)
    RefillCardSettings.objects.update_or_create(pk=1, defaults={"enabled": False})
    with pytest.raises(RefillCardsDisabled):
        redeem(plain[0], alice)
    with pytest.raises(RefillCardsDisabled):
        series_of(1)


def test_five_failures_lock_the_customer_and_a_valid_code_is_then_refused(series_of, alice, bob):
    _, plain = series_of(1)
    for n in range(5):
        with pytest.raises(CardRefused):
            redeem(codes.new_code("NW"), alice, client_ip=f"192.0.2.{n}")
    with pytest.raises(RedemptionLocked) as locked:
        redeem(plain[0], alice, client_ip="192.0.2.99")
    assert "paused" in str(locked.value)
    assert card_of(RefillCard.objects.first().series).status == "active"
    # staff are not locked out, and Bob is not affected
    assert redeem(plain[0], bob, channel="staff").card.used_by == bob


def test_twenty_failures_a_minute_lock_the_address(series_of, alice):
    _, plain = series_of(1)
    customers = [CustomerFactory(partner=alice.partner) for _ in range(5)]
    for n in range(20):
        with pytest.raises(CardRefused):
            redeem(codes.new_code(""), customers[n % 5], client_ip="198.51.100.7")
    with pytest.raises(RedemptionLocked):
        redeem(plain[0], alice, client_ip="198.51.100.7")
    assert redeem(plain[0], alice, client_ip="198.51.100.8").card.status == "used"


def test_the_lockout_ends(series_of, alice, settings):
    _, plain = series_of(1)
    settings.REFILL_CARD_LOCKOUT_MINUTES = 1
    for _ in range(5):
        with pytest.raises(CardRefused):
            redeem("NOT-A-CODE-AT-ALL-1234", alice)
    with pytest.raises(RedemptionLocked):
        redeem(plain[0], alice)
    from django.core.cache import cache

    client = cache._cache.get_client(write=True)
    ttls = [
        client.ttl(k)
        for k in client.scan_iter(match=f"*{settings.REFILL_CARD_CACHE_NAMESPACE}:lock:*")
    ]
    assert ttls and all(0 < t <= 60 for t in ttls)


def test_card_edit_delete_and_series_rules(series_of, alice):
    series, plain = series_of(3)
    later = timezone.now() + timedelta(days=90)
    card = services.update_card(
        card=card_of(series, 2), valid_until=later, status="disabled", actor=STAFF
    )
    assert (card.status, card.valid_until) == ("disabled", later)
    with pytest.raises(InvalidSeries):
        services.update_card(card=card, valid_until=timezone.now(), status="active", actor=STAFF)
    redeem(plain[0], alice, channel="staff")
    with pytest.raises(CardStateError):
        services.update_card(
            card=card_of(series, 1), valid_until=later, status="active", actor=STAFF
        )
    with pytest.raises(CardStateError):
        services.delete_card(card=card_of(series, 1), actor=STAFF)
    services.delete_card(card=card_of(series, 3), actor=STAFF)
    assert series.cards.count() == 2
    with pytest.raises(CardStateError, match="disable it instead"):
        services.delete_series(series=series, actor=STAFF)
    assert services.disable_series(series=series, actor=STAFF) == 0  # card 2 already disabled
    fresh, _ = series_of(2)
    assert services.delete_series(series=fresh, actor=STAFF) == 2
    assert not CardSeries.objects.filter(pk=fresh.pk).exists()


def test_the_beat_job_expires_cards_past_valid_until(series_of, alice):
    series, plain = series_of(3, days=1)
    redeem(plain[0], alice, channel="staff")
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        result = expire_cards(batch_size=1)
        assert result["processed"] == 2
        assert sorted(series.cards.values_list("status", flat=True)) == [
            "expired",
            "expired",
            "used",
        ]
        assert expire_cards()["processed"] == 0
        # a later valid until on the series brings them back
        services.update_series(
            series=series, valid_until=timezone.now() + timedelta(days=5), note="", actor=STAFF
        )
        assert sorted(series.cards.values_list("status", flat=True)) == ["active", "active", "used"]


def test_the_job_is_registered():
    from jobs.registry import get

    assert get("expire_refill_cards").task == "refillcards.tasks.expire_cards"
