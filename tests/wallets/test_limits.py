"""Credit limits (wallets/services/credit_limits.py): the permanent limit with its history, temporary
increases bounded by the maximum possible increase, and their reversion exactly at
Valid Until (read time) recorded by the revert_temporary_limits job."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection

from billing.models import Customer
from tests.factories import CustomerClassFactory, CustomerFactory
from tests.wallets.conftest import STAFF
from tests.wallets.test_concurrency import run_parallel
from wallets import errors, services, tasks
from wallets.models import CreditLimitChange, CreditLimitSettings, Notification, Wallet
from wallets.services import credit_limits as limits

D = Decimal
pytestmark = pytest.mark.django_db
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
V = T0 + timedelta(days=3)  # Valid Until of the increase in most tests
US = timedelta(microseconds=1)


def postpaid(name="Dora", **kwargs):
    kwargs.setdefault("balance_model", Customer.BalanceModel.POSTPAID)
    return CustomerFactory(name=name, **kwargs)


@pytest.fixture
def dora():
    """A postpaid customer with a permanent limit of 100 USD, at T0."""
    with time_machine.travel(T0, tick=False):
        customer = postpaid()
        wallet = services.open_wallet_with_limit(customer=customer, limit="100", actor=STAFF)
    return wallet


def history(wallet):
    return list(
        CreditLimitChange.objects.filter(wallet=wallet)
        .order_by("changed_at", "id")
        .values_list("kind", "old_limit", "new_limit", "old_temporary_increase",
                     "new_temporary_increase")
    )  # fmt: skip


def grant_increase(wallet, **kwargs):
    kwargs.setdefault("valid_until", V)
    kwargs.setdefault("reason", "Holiday season")
    with time_machine.travel(T0, tick=False):
        return services.grant_temporary_increase(wallet=wallet, actor=STAFF, **kwargs)


def test_creating_a_customer_opens_its_wallet_with_the_limit_and_records_it():
    customer = postpaid()
    wallet = services.open_wallet_with_limit(customer=customer, limit="250.50", actor=STAFF)
    assert wallet.currency == customer.currency and wallet.credit_limit == D("250.50")
    (change,) = CreditLimitChange.objects.filter(wallet=wallet)
    assert (change.old_limit, change.new_limit, change.actor) == (0, D("250.50"), STAFF.label)
    assert change.reason == "Set when the customer was created."
    # again: the same wallet, no second row
    assert services.open_wallet_with_limit(customer=customer, limit="250.50", actor=STAFF) == wallet
    assert CreditLimitChange.objects.filter(wallet=wallet).count() == 1


def test_permanent_limit_change_is_recorded_and_the_same_value_is_a_no_op(dora):
    change = services.change_permanent_limit(
        wallet=dora, limit="300", actor=STAFF, reason="Good payer"
    )
    assert (change.old_limit, change.new_limit, change.reason) == (D("100"), D("300"), "Good payer")
    assert (
        services.change_permanent_limit(wallet=dora, limit="300.00", actor=STAFF, reason="x")
        is None
    )
    dora.refresh_from_db()
    assert dora.credit_limit == D("300")
    assert [k for k, *_ in history(dora)] == ["permanent", "permanent"]


def test_an_idempotency_key_records_once_and_refuses_other_arguments(dora):
    first = services.change_permanent_limit(
        wallet=dora, limit="200", actor=STAFF, reason="r", idempotency_key="lim-1"
    )
    services.change_permanent_limit(wallet=dora, limit="150", actor=STAFF, reason="r2")
    again = services.change_permanent_limit(
        wallet=dora, limit="200", actor=STAFF, reason="r", idempotency_key="lim-1"
    )
    assert again == first
    dora.refresh_from_db()
    assert dora.credit_limit == D("150")  # the replay did not set 200 again
    with pytest.raises(errors.IdempotencyConflict):
        services.change_permanent_limit(
            wallet=dora, limit="999", actor=STAFF, reason="r", idempotency_key="lim-1"
        )


def test_limit_below_the_debt_is_refused(dora):
    services.draw_down(wallet=dora, amount=D("60"), actor=STAFF, idempotency_key="u1")
    with pytest.raises(errors.LimitRefused, match="below the current debt 60.00"):
        services.change_permanent_limit(wallet=dora, limit="50", actor=STAFF, reason="r")
    dora.refresh_from_db()
    assert dora.credit_limit == D("100")


@pytest.mark.parametrize(
    "limit, message",
    [
        ("-1", "zero or more"),
        ("abc", "must be a number"),
        ("NaN", "finite"),
        ("1e20", "too large"),
        ("1.001", "at most 2 decimals"),
        (1.5, "not 1.5"),
        ("1\x00", "must be a number"),
    ],
)
def test_bad_permanent_limits_say_what_to_fix_and_change_nothing(dora, limit, message):
    with pytest.raises(errors.LimitRefused, match=message):
        services.change_permanent_limit(wallet=dora, limit=limit, actor=STAFF, reason="r")
    dora.refresh_from_db()
    assert dora.credit_limit == D("100")
    assert len(history(dora)) == 1


def test_a_reason_is_required(dora):
    for reason in ["", "   ", "x" * 501, "a\x00b"]:
        with pytest.raises(errors.LimitRefused) as caught:
            services.change_permanent_limit(wallet=dora, limit="200", actor=STAFF, reason=reason)
        assert caught.value.field == "reason"
    assert len(history(dora)) == 1


def test_temporary_increase_by_amount_counts_until_one_microsecond_before_valid_until(dora):
    change = grant_increase(dora, amount="50")
    assert (change.kind, change.new_temporary_increase, change.valid_until) == ("temporary", 50, V)
    dora.refresh_from_db()
    assert dora.effective_credit_limit(V - US) == D("150")
    assert dora.effective_credit_limit(V) == D("100")
    assert dora.effective_credit_limit(V + US) == D("100")
    # the SQL twin agrees on both sides of the edge
    with connection.cursor() as cursor:
        for at, expected in [(V - US, D("150")), (V, D("100")), (V + US, D("100"))]:
            cursor.execute("SELECT wallets_available_funds(%s, %s)", [dora.pk, at])
            assert cursor.fetchone()[0] == expected


def test_temporary_increase_as_a_percentage_of_the_permanent_limit(dora):
    change = grant_increase(dora, percent="25")
    assert change.new_temporary_increase == D("25.00")
    assert "25" in change.reason and "%" in change.reason


def test_usage_may_take_debt_under_the_increase_only_before_valid_until(dora):
    grant_increase(dora, amount="50")
    with time_machine.travel(V - US, tick=False):
        services.draw_down(wallet=dora, amount=D("140"), actor=STAFF, idempotency_key="u1")
    with time_machine.travel(V, tick=False):
        with pytest.raises(errors.InsufficientFunds):
            services.draw_down(wallet=dora, amount=D("1"), actor=STAFF, idempotency_key="u2")
        dora.refresh_from_db()
        state = services.limit_state(dora)
    assert (state.effective, state.debt, state.over_limit) == (D("100"), D("140"), D("40"))
    assert state.lapsed_unrecorded


@pytest.mark.parametrize(
    "kwargs, field, message",
    [
        (
            {"amount": "1000.01"},
            "amount",
            "above the maximum possible increase: 1000.00 USD for at most 30 days",
        ),
        ({"amount": "0"}, "amount", "more than zero"),
        ({"amount": "-5"}, "amount", "more than zero"),
        ({"amount": "5", "percent": "5"}, "amount", "not both"),
        ({}, "amount", "not both"),
        ({"percent": "0"}, "percent", "more than 0"),
        ({"percent": "1001"}, "percent", "at most 1000"),
        ({"percent": "2000", "valid_until": V}, "percent", "at most 1000"),
        ({"amount": "5", "valid_until": T0 - US}, "valid_until", "must be in the future"),
        ({"amount": "5", "valid_until": T0}, "valid_until", "must be in the future"),
        (
            {"amount": "5", "valid_until": T0 + timedelta(days=30) + US},
            "valid_until",
            "at most 30 days",
        ),
        ({"amount": "5", "valid_until": datetime(2026, 12, 3)}, "valid_until", "time zone"),
    ],
)
def test_refused_increases_name_the_field_and_change_nothing(dora, kwargs, field, message):
    with pytest.raises(errors.LimitRefused, match=message) as caught:
        grant_increase(dora, **kwargs)
    assert caught.value.field == field
    dora.refresh_from_db()
    assert (dora.temporary_credit_increase, dora.temporary_increase_valid_until) == (0, None)
    assert len(history(dora)) == 1


def test_the_longest_and_largest_allowed_increase_is_accepted(dora):
    change = grant_increase(dora, amount="1000", valid_until=T0 + timedelta(days=30))
    assert change.new_temporary_increase == D("1000")


def test_percentage_on_a_zero_limit_and_prepaid_customers_are_refused():
    with time_machine.travel(T0, tick=False):
        zero = services.open_wallet_with_limit(customer=postpaid(), limit="0", actor=STAFF)
        prepaid = services.open_wallet(customer=CustomerFactory())
    with pytest.raises(errors.LimitRefused, match="positive permanent credit limit"):
        grant_increase(zero, percent="10")
    with pytest.raises(errors.LimitRefused, match="postpaid customers only"):
        grant_increase(prepaid, amount="10")
    assert CreditLimitChange.objects.filter(kind="temporary").count() == 0


def test_the_class_maximum_wins_over_the_global_setting_and_the_refusal_names_it():
    gold = CustomerClassFactory(
        name="Gold", max_temporary_increase_amount=D("500"), max_temporary_increase_days=7
    )
    with time_machine.travel(T0, tick=False):
        wallet = services.open_wallet_with_limit(
            customer=postpaid(customer_class=gold), limit="100", actor=STAFF
        )
    assert services.maximum_increase(wallet.customer).text("USD") == (
        "500.00 USD for at most 7 days (customer class Gold)"
    )
    with pytest.raises(errors.LimitRefused, match="500.00 USD for at most 7 days"):
        grant_increase(wallet, amount="500.01", valid_until=T0 + timedelta(days=1))
    with pytest.raises(errors.LimitRefused, match="at most 7 days from now"):
        grant_increase(wallet, amount="10", valid_until=T0 + timedelta(days=8))
    # a class that sets only the amount takes the days from the global settings
    settings = CreditLimitSettings.load()
    settings.max_temporary_increase_days = 10
    settings.save()
    gold.max_temporary_increase_days = None
    gold.save()
    wallet.customer.refresh_from_db()
    assert services.maximum_increase(wallet.customer).days == 10


def test_the_job_records_the_reversion_at_valid_until_warns_and_notifies_once(dora):
    dora.customer.credit_limit_warnings = "80%"
    dora.customer.save()
    services.copy_warning_thresholds(dora.customer)
    grant_increase(dora, amount="100")  # 200 in force
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        services.draw_down(wallet=dora, amount=D("90"), actor=STAFF, idempotency_key="u1")
    assert not Notification.objects.filter(kind="credit_limit").exists()  # 45 % of 200
    late = V + timedelta(days=2, minutes=7)  # the job ran late
    with time_machine.travel(late, tick=False):
        assert tasks.revert_temporary_limits()["processed"] == 1
        assert tasks.revert_temporary_limits()["processed"] == 0  # twice = one row
    reverted = CreditLimitChange.objects.get(wallet=dora, kind="reverted")
    assert reverted.changed_at == V  # the right time, not the job's
    assert (reverted.old_temporary_increase, reverted.new_temporary_increase) == (100, 0)
    assert reverted.actor == "job:revert_temporary_limits"
    dora.refresh_from_db()
    assert (dora.temporary_credit_increase, dora.temporary_increase_valid_until) == (0, None)
    (notice,) = Notification.objects.filter(kind="credit_limit_reverted")
    assert "ended on 2026-12-05 10:00 UTC" in notice.body and "100.00 USD" in notice.body
    (warning,) = Notification.objects.filter(kind="credit_limit")  # 90 % of 100 at the lapse
    assert "80%" in warning.subject
    assert services.limit_state(dora).over_limit == 0


def test_the_job_before_valid_until_records_nothing(dora):
    grant_increase(dora, amount="50")
    assert services.revert_lapsed_increases(at=V - US) == 0
    assert services.revert_lapsed_increases(at=V) == 1
    assert [k for k, *_ in history(dora)] == ["permanent", "temporary", "reverted"]


def test_a_limit_change_after_a_lapse_records_the_reversion_first(dora):
    grant_increase(dora, amount="50")
    with time_machine.travel(V + timedelta(hours=1), tick=False):
        services.change_permanent_limit(wallet=dora, limit="120", actor=STAFF, reason="review")
        assert services.revert_lapsed_increases() == 0  # already recorded
    assert history(dora) == [
        ("permanent", 0, 100, 0, 0),
        ("temporary", 100, 100, 0, 50),
        ("reverted", 100, 100, 50, 0),
        ("permanent", 100, 120, 0, 0),
    ]


def test_ending_an_increase_early_leaves_debt_over_the_limit_visible(dora, ledger_ok):
    grant_increase(dora, amount="50")
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        services.draw_down(wallet=dora, amount=D("130"), actor=STAFF, idempotency_key="u1")
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        change = services.end_temporary_increase(wallet=dora, actor=STAFF, reason="Risk review")
        assert change.kind == "ended"
        assert services.end_temporary_increase(wallet=dora, actor=STAFF, reason="again") is None
        dora.refresh_from_db()
        assert services.limit_state(dora).over_limit == D("30")
    assert services.revert_lapsed_increases(at=V + US) == 0
    ledger_ok()


def test_a_class_maximum_change_is_in_the_history_of_its_postpaid_wallets():
    gold = CustomerClassFactory(name="Gold", max_temporary_increase_amount=D("500"))
    wallet = services.open_wallet_with_limit(
        customer=postpaid(customer_class=gold), limit="10", actor=STAFF
    )
    services.open_wallet(customer=CustomerFactory(customer_class=gold))  # prepaid: not told
    gold.max_temporary_increase_amount = D("800")
    gold.save()
    assert (
        services.record_class_maximum_change(
            klass=gold, old_amount=D("500"), old_days=None, actor=STAFF
        )
        == 1
    )
    change = CreditLimitChange.objects.get(kind="class_maximum")
    assert change.wallet == wallet
    assert (
        change.reason
        == "Maximum possible increase of class Gold: 500.00 / global days → 800.00 / global days."
    )
    assert (
        services.record_class_maximum_change(
            klass=gold, old_amount=D("800"), old_days=None, actor=STAFF
        )
        == 0
    )


@pytest.mark.django_db(transaction=True)
def test_two_staff_setting_limits_at_once_are_both_recorded_in_order(ledger_ok):
    wallet = services.open_wallet_with_limit(customer=postpaid(), limit="100", actor=STAFF)

    def set_limit(n):
        return services.change_permanent_limit(
            wallet=wallet.pk, limit=str(200 + n), actor=STAFF, reason=f"staff {n}",
            idempotency_key=f"panel:{n}",
        )  # fmt: skip

    results = run_parallel(8, set_limit)
    assert all(r is not None for r in results)
    rows = list(CreditLimitChange.objects.filter(wallet=wallet).order_by("changed_at", "id"))
    assert len(rows) == 9
    for before, after in zip(rows, rows[1:], strict=False):
        assert after.old_limit == before.new_limit  # no lost update
    assert Wallet.objects.get(pk=wallet.pk).credit_limit == rows[-1].new_limit
    ledger_ok()


@pytest.mark.django_db(transaction=True)
def test_the_job_racing_itself_records_one_reversion():
    with time_machine.travel(T0, tick=False):
        wallet = services.open_wallet_with_limit(customer=postpaid(), limit="100", actor=STAFF)
        services.grant_temporary_increase(
            wallet=wallet, amount="10", valid_until=V, actor=STAFF, reason="r"
        )
    run_parallel(4, lambda n: limits.revert_lapsed_increases(at=V + US))
    assert CreditLimitChange.objects.filter(kind="reverted").count() == 1
    assert Notification.objects.filter(kind="credit_limit_reverted").count() == 1
