"""Low-funds and credit-limit warnings: the customer's comma-separated thresholds,
copied onto the wallet, watched by a database trigger on every balance change; each
downward crossing queues one email in the outbox, in the same transaction."""

from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from billing.models import Customer
from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import Notification, Wallet
from wallets.notifications import send_due_notification_batches

pytestmark = pytest.mark.django_db
D = Decimal


def warnings(kind="low_funds"):
    return list(
        Notification.objects.filter(kind=kind).order_by("id").values_list("subject", flat=True)
    )


def draw(wallet, amount, key):
    return services.draw_down(wallet=wallet, amount=D(amount), actor=STAFF, idempotency_key=key)


@pytest.fixture
def watched(alice, grant):
    """alice (prepaid, USD) with 100 of credit and warnings at 50, 20 and 5."""
    alice.low_funds_thresholds = "20,5 ,50"
    alice.save()
    wallet = services.open_wallet(customer=alice)
    grant(wallet, "100")
    return wallet


def test_thresholds_are_normalised_and_copied_to_the_wallets(alice):
    wallet = services.open_wallet(customer=alice)
    alice.low_funds_thresholds = " 5, 50 ,20.50"
    alice.credit_limit_warnings = "90, 80%"
    alice.save()
    assert wallet.low_funds_thresholds is None  # saving the customer touches no wallet
    assert services.copy_warning_thresholds(alice) == 1  # the explicit copy does
    alice.refresh_from_db()
    wallet.refresh_from_db()
    assert alice.low_funds_thresholds == "50, 20.5, 5"
    assert alice.credit_limit_warnings == "80%, 90%"
    assert wallet.low_funds_thresholds == [D("50"), D("20.5"), D("5")]
    assert wallet.credit_limit_warnings == [D("80"), D("90")]
    # a wallet opened later starts with the same lists
    euro = services.open_wallet(customer=alice, currency="EUR")
    assert euro.low_funds_thresholds == [D("50"), D("20.5"), D("5")]
    # clearing them switches the trigger off for these wallets
    alice.low_funds_thresholds = alice.credit_limit_warnings = ""
    alice.save()
    services.copy_warning_thresholds(alice)
    assert list(Wallet.objects.filter(customer=alice).values_list(
        "low_funds_thresholds", "credit_limit_warnings"
    )) == [(None, None), (None, None)]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("low_funds_thresholds", "50, abc", "“abc” is not a number"),
        ("low_funds_thresholds", "-5", "must be more than zero"),
        ("low_funds_thresholds", "10, 10", "only once"),
        ("low_funds_thresholds", "1.234", "at most two decimals"),
        ("credit_limit_warnings", "80%, 150%", "at most 100"),
        ("credit_limit_warnings", "0", "more than 0"),
        ("credit_limit_warnings", "eighty", "percentages such as 80%"),
    ],
)
def test_bad_thresholds_are_refused_with_a_message_and_nothing_changes(alice, field, text, message):
    wallet = services.open_wallet(customer=alice)
    setattr(alice, field, text)
    with pytest.raises(ValidationError, match=message):
        alice.full_clean()
    with pytest.raises(ValidationError, match=message):
        alice.save()
    wallet.refresh_from_db()
    assert Customer.objects.get(pk=alice.pk).low_funds_thresholds == ""
    assert wallet.low_funds_thresholds is None and wallet.credit_limit_warnings is None


def test_each_threshold_crossed_downwards_queues_one_warning(watched, grant, ledger_ok):
    draw(watched, "49", "u1")  # 51 left: nothing crossed
    assert warnings() == []
    draw(watched, "2", "u2")  # 49 left: below 50
    assert warnings() == ["Low funds: less than 50.00 USD available"]
    draw(watched, "1", "u3")  # 48: still below 50, no new crossing
    draw(watched, "46", "u4")  # 2: below 20 and 5 in one movement
    assert warnings()[1:] == [
        "Low funds: less than 20.00 USD available",
        "Low funds: less than 5.00 USD available",
    ]
    body = Notification.objects.filter(kind="low_funds").order_by("id").last().body
    assert watched.customer.account_number in body and "2.00 USD are available now" in body

    # a top-up lifts the funds above every threshold; the next descent warns again
    grant(watched, "100")  # 102
    draw(watched, "60", "u5")  # 42
    assert warnings()[3:] == ["Low funds: less than 50.00 USD available"]
    ledger_ok()


def test_a_retried_draw_down_queues_nothing_new(watched):
    first = draw(watched, "60", "same")
    again = draw(watched, "60", "same")
    assert again.transaction_id == first.transaction_id
    assert Notification.objects.count() == 1


def test_a_refused_draw_down_queues_nothing(watched):
    with pytest.raises(errors.InsufficientFunds):
        draw(watched, "500", "too-much")
    assert Notification.objects.count() == 0


def test_a_batch_crossing_several_thresholds_queues_each_once(watched):
    charges = [services.UsageCharge(amount=D("30"), idempotency_key=f"b{i}") for i in range(3)]
    results = services.draw_down_batch(wallet=watched, charges=charges, actor=STAFF)
    assert all(isinstance(r, services.DrawDown) for r in results)  # 10 left
    assert warnings() == [
        "Low funds: less than 50.00 USD available",
        "Low funds: less than 20.00 USD available",
    ]


def test_expiry_and_transfers_also_trigger_warnings(watched, bob, keys):
    bob_wallet = services.open_wallet(customer=bob)
    services.transfer(
        source=watched, target=bob_wallet, amount=D("70"), actor=STAFF,
        idempotency_key=keys.next(), enforce_policy=False,
    )  # fmt: skip
    assert warnings() == ["Low funds: less than 50.00 USD available"]


def test_credit_limit_warnings_count_the_share_of_the_limit_in_use(charlie, ledger_ok):
    charlie.credit_limit_warnings = "80%, 100%"
    charlie.save()
    wallet = services.open_wallet(customer=charlie)
    services.change_permanent_limit(wallet=wallet, limit="200", actor=STAFF, reason="new customer")
    draw(wallet, "150", "c1")  # 75 % in use
    assert warnings("credit_limit") == []
    draw(wallet, "20", "c2")  # 85 %
    assert warnings("credit_limit") == ["Credit limit warning: 80% of your credit limit in use"]
    draw(wallet, "30", "c3")  # 100 %
    assert warnings("credit_limit")[1:] == [
        "Credit limit warning: 100% of your credit limit in use"
    ]
    body = Notification.objects.filter(kind="credit_limit").order_by("id").last().body
    assert "200.00 EUR of the 200.00 EUR credit limit" in body and "(100.0%)" in body
    ledger_ok()


def test_lowering_the_credit_limit_can_cross_a_warning(charlie):
    charlie.credit_limit_warnings = "90%"
    charlie.save()
    wallet = services.open_wallet(customer=charlie)
    services.change_permanent_limit(wallet=wallet, limit="200", actor=STAFF, reason="test")
    draw(wallet, "150", "c1")  # 75 %
    services.change_permanent_limit(
        wallet=wallet, limit="160", actor=STAFF, reason="test"
    )  # 93.75 %
    assert warnings("credit_limit") == ["Credit limit warning: 90% of your credit limit in use"]


def test_customers_without_thresholds_get_no_warnings(alice, grant):
    wallet = services.open_wallet(customer=alice)
    grant(wallet, "10")
    draw(wallet, "9.99", "u1")
    assert Notification.objects.count() == 0


def test_the_warning_is_emailed_by_the_notifications_job(watched):
    draw(watched, "60", "u1")
    (batch,) = send_due_notification_batches()
    assert batch.sent == 1
    (message,) = mail.outbox
    assert message.to == [watched.customer.email]
    assert message.subject == "Low funds: less than 50.00 USD available"


def test_class_defaults_apply_where_the_customer_has_none(alice, bob, grant):
    from billing.models import CustomerClass

    retail = CustomerClass.objects.create(name="Retail", low_funds_thresholds="10")
    alice.customer_class = bob.customer_class = retail
    alice.save()
    bob.low_funds_thresholds = "30"  # his own list wins
    bob.save()
    alice_wallet = services.open_wallet(customer=alice)
    bob_wallet = services.open_wallet(customer=bob)
    assert alice_wallet.low_funds_thresholds == [D("10")]
    assert bob_wallet.low_funds_thresholds == [D("30")]

    # staff change the class default: wallets following it change, bob's stays his
    retail.low_funds_thresholds = "25,5"
    retail.credit_limit_warnings = "90"
    retail.save()
    services.copy_class_warning_thresholds(retail)
    alice_wallet.refresh_from_db()
    bob_wallet.refresh_from_db()
    assert retail.low_funds_thresholds == "25, 5" and retail.credit_limit_warnings == "90%"
    assert alice_wallet.low_funds_thresholds == [D("25"), D("5")]
    assert bob_wallet.low_funds_thresholds == [D("30")]
    assert alice_wallet.credit_limit_warnings == bob_wallet.credit_limit_warnings == [D("90")]

    grant(alice_wallet, "30")
    draw(alice_wallet, "10", "u1")  # 20 left: below the class's 25
    assert warnings() == ["Low funds: less than 25.00 USD available"]

    # leaving the class drops its defaults
    alice.customer_class = None
    alice.save(update_fields=["customer_class"])
    services.copy_warning_thresholds(alice)
    alice_wallet.refresh_from_db()
    assert alice_wallet.low_funds_thresholds is None


def test_a_bad_class_default_is_refused(db):
    from billing.models import CustomerClass

    klass = CustomerClass(name="Odd", low_funds_thresholds="ten")
    with pytest.raises(ValidationError, match="“ten” is not a number"):
        klass.full_clean()
    with pytest.raises(ValidationError):
        klass.save()
    assert not CustomerClass.objects.filter(name="Odd").exists()


# --- "back above" (wallets 0013) ------------------------------------------------------


def test_funds_back_above_a_threshold_that_warned_notify_once_and_rearm(watched, grant):
    draw(watched, "60", "u1")  # 100 → 40: below 50
    assert warnings() == ["Low funds: less than 50.00 USD available"]
    grant(watched, "30")  # 70: back above 50
    assert warnings("low_funds_recovered") == ["Funds back above 50.00 USD"]
    grant(watched, "30")  # 100: nothing crossed upwards
    draw(watched, "5", "u2")  # 95: nothing crossed downwards
    assert len(warnings("low_funds_recovered")) == 1
    draw(watched, "60", "u3")  # 35: below 50 again (re-armed) ...
    grant(watched, "20")  # 55: ... and back above again
    assert warnings() == ["Low funds: less than 50.00 USD available"] * 2
    assert warnings("low_funds_recovered") == ["Funds back above 50.00 USD"] * 2
    notice = Notification.objects.filter(kind="low_funds_recovered").order_by("id").last()
    assert "55.00 USD are available now" in notice.body


def test_funds_rising_past_a_threshold_that_never_warned_say_nothing(alice, grant):
    alice.low_funds_thresholds = "50"
    alice.save()
    wallet = services.open_wallet(customer=alice)
    grant(wallet, "100")  # 0 → 100: above 50, but it never warned
    assert warnings("low_funds_recovered") == []


def test_credit_limit_back_below_a_warned_share_after_a_payment(charlie):
    charlie.credit_limit_warnings = "80%"
    charlie.save()
    wallet = services.open_wallet(customer=charlie)
    services.change_permanent_limit(wallet=wallet, limit="100", actor=STAFF, reason="test")
    draw(wallet, "90", "u1")
    assert warnings("credit_limit") == ["Credit limit warning: 80% of your credit limit in use"]
    services.record_debt_payment(wallet=wallet, amount=D("50"), actor=STAFF, idempotency_key="p1")
    assert warnings("credit_limit_recovered") == ["Credit limit: back below 80% in use"]
    assert "(40.0%)" in Notification.objects.get(kind="credit_limit_recovered").body
