"""Time in the money rules (issue 12, money bugs 3 and 5).

- The limit that allows debt is the one in force when the money moves (now); a
  usage event's timestamp decides only which grants were eligible for it.
- Available funds count only unrestricted credit that is effective and unexpired at
  the moment asked (plus the limit in force then, less the debt): one definition,
  `Wallet.available_funds(at)` in Python and `wallets_available_funds(wallet, at)`
  in SQL, pinned together by a differential test. Credit that is not yet effective
  does not pay debt until it becomes effective (the `settle_debts` job).
"""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import LedgerTransaction, Notification, Wallet

D = Decimal


def lapsed_increase(wallet, amount="1000"):
    """A temporary increase of `amount` that lapsed a day ago; the permanent limit is 0."""
    until = timezone.now() - timedelta(days=1)
    Wallet.objects.filter(pk=wallet.pk).update(
        temporary_credit_increase=D(amount), temporary_increase_valid_until=until
    )
    return until


def nothing_owed(wallet):
    wallet.refresh_from_db()
    return wallet.debt == 0 and not LedgerTransaction.objects.filter(kind="usage").exists()


# --- money bug 3: the limit in force now, not at the event's timestamp ------------


@pytest.mark.django_db
def test_back_dated_usage_cannot_borrow_under_a_lapsed_increase(wallet, ledger_ok):
    until = lapsed_increase(wallet)
    with pytest.raises(errors.InsufficientFunds, match="credit limit room 0"):
        services.draw_down(
            wallet=wallet, amount=D("800"), actor=STAFF, idempotency_key="u1",
            at=until - timedelta(hours=1),
        )  # fmt: skip
    assert nothing_owed(wallet)
    ledger_ok()


@pytest.mark.django_db
@pytest.mark.parametrize("events", [1, 3])
def test_back_dated_batch_cannot_borrow_under_a_lapsed_increase(wallet, events, ledger_ok):
    until = lapsed_increase(wallet)
    charges = [
        services.UsageCharge(
            amount=D("800"),
            idempotency_key=f"u{n}",
            item_id=None,
            at=until - timedelta(hours=1, minutes=n),
        )  # fmt: skip
        for n in range(events)
    ]
    results = services.draw_down_batch(wallet=wallet, charges=charges, actor=STAFF)
    assert all(isinstance(r, errors.InsufficientFunds) for r in results), results
    assert nothing_owed(wallet)
    ledger_ok()


@pytest.mark.django_db
def test_back_dated_usage_may_use_the_limit_in_force_now(wallet, ledger_ok):
    """The other way round: an increase granted today lets yesterday's event into debt."""
    Wallet.objects.filter(pk=wallet.pk).update(
        temporary_credit_increase=D("100"),
        temporary_increase_valid_until=timezone.now() + timedelta(days=1),
    )
    draw = services.draw_down(
        wallet=wallet, amount=D("80"), actor=STAFF, idempotency_key="u1",
        at=timezone.now() - timedelta(days=3),
    )  # fmt: skip
    assert draw.to_debt == D("80")
    ledger_ok()


@pytest.mark.django_db
def test_back_dated_usage_through_the_api_is_refused_after_the_increase_lapsed(
    alice, calls, price, api_key
):
    from django.test import Client

    price(calls, "1")
    wallet = services.open_wallet(customer=alice)
    until = lapsed_increase(wallet)
    _, token = api_key
    api = Client(headers={"Authorization": f"Bearer {token}"})
    body = {
        "event_id": "late-1", "customer": alice.account_number, "product": "api-calls",
        "quantity": "800", "timestamp": (until - timedelta(hours=1)).isoformat(),
    }  # fmt: skip
    response = api.post("/api/v1/usage", body, content_type="application/json")
    assert response.status_code == 402, response.content
    batch = api.post(
        "/api/v1/usage/batch",
        {"events": [{**body, "event_id": "late-2"}, {**body, "event_id": "late-3"}]},
        content_type="application/json",
    )
    assert [r["status"] for r in batch.json()["results"]] == [402, 402]
    assert nothing_owed(wallet)


# --- money bug 5: available funds, one definition ---------------------------------


@pytest.fixture
def mixed(wallet, grant):
    """alice's wallet: 100 usable now, 50 effective tomorrow, 30 that expired an hour
    ago but is not swept yet, 20 restricted to a product."""
    now = timezone.now()
    grant(wallet, "100", effective_at=now - timedelta(days=3))
    grant(wallet, "50", effective_at=now + timedelta(days=1))
    with time_machine.travel(now - timedelta(days=2)):
        grant(wallet, "30", expires_at=now - timedelta(hours=1))
    grant(wallet, "20", condition_dimensions={"region": "eu"}, effective_at=now - timedelta(days=3))
    wallet.refresh_from_db()
    return wallet


def sql_available(wallet, at):
    with connection.cursor() as cursor:
        cursor.execute("SELECT wallets_available_funds(%s, %s)", [wallet.pk, at])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_available_funds_count_only_credit_effective_and_unexpired_at_that_moment(mixed):
    now = timezone.now()
    assert mixed.credit_balance == D("200")  # the cache: every live grant
    assert mixed.available_funds() == D("100")
    assert mixed.available_funds(now - timedelta(hours=2)) == D("130")
    assert mixed.available_funds(now + timedelta(days=2)) == D("150")
    for at in (now, now - timedelta(hours=2), now + timedelta(days=2)):
        assert sql_available(mixed, at) == mixed.available_funds(at)


@pytest.mark.django_db
def test_readers_show_the_same_available_funds(mixed, alice, client, api_key):
    from django.test import Client

    _, token = api_key
    api = Client(headers={"Authorization": f"Bearer {token}"})
    balance = api.get(f"/api/v1/customers/{alice.account_number}/balance").json()
    assert D(balance["available_funds"]) == D("100")

    from billing.models import PortalUser

    client.force_login(PortalUser.objects.get(customer=alice).user)
    page = client.get("/portal/").content.decode()
    assert 'id="available-USD">100.00<' in page
    assert "Usable from" in page and "<td>Expired</td>" in page


@pytest.mark.django_db
def test_the_usage_answer_counts_only_credit_available_now(alice, calls, price, api_key, credit):
    from django.test import Client

    price(calls, "1")
    credit(alice, "10")
    credit(alice, "500", effective_at=timezone.now() + timedelta(days=1))
    _, token = api_key
    api = Client(headers={"Authorization": f"Bearer {token}"})
    event = {"event_id": "e1", "customer": alice.account_number, "product": "api-calls",
             "quantity": "2"}  # fmt: skip
    one = api.post("/api/v1/usage", event, content_type="application/json").json()
    assert D(one["available_funds"]) == D("8")
    batch = api.post(
        "/api/v1/usage/batch",
        {"events": [{**event, "event_id": "e2"}, {**event, "event_id": "e3", "quantity": "1"}]},
        content_type="application/json",
    ).json()
    assert [D(r["usage"]["available_funds"]) for r in batch["results"]] == [D("6"), D("5")]
    # a batch with a replay (worked back from the wallet)
    mixed_batch = api.post(
        "/api/v1/usage/batch",
        {"events": [{**event, "event_id": "e1"}, {**event, "event_id": "e4", "quantity": "1"}]},
        content_type="application/json",
    ).json()
    assert D(mixed_batch["results"][1]["usage"]["available_funds"]) == D("4")


@pytest.mark.django_db
def test_the_warning_trigger_ignores_credit_not_yet_effective(alice, grant):
    alice.low_funds_thresholds = "50"
    alice.save()
    wallet = services.open_wallet(customer=alice)
    grant(wallet, "100", effective_at=timezone.now() - timedelta(days=1))
    grant(wallet, "500", effective_at=timezone.now() + timedelta(days=1))
    services.draw_down(wallet=wallet, amount=D("60"), actor=STAFF, idempotency_key="u1")
    assert list(Notification.objects.values_list("kind", flat=True)) == ["low_funds"]
    assert "40.00 USD are available" in Notification.objects.get().body


@pytest.mark.django_db
def test_the_warning_trigger_ignores_expired_credit_not_yet_swept(alice, grant):
    alice.low_funds_thresholds = "50"
    alice.save()
    wallet = services.open_wallet(customer=alice)
    now = timezone.now()
    grant(wallet, "100", effective_at=now - timedelta(days=3))
    with time_machine.travel(now - timedelta(days=2)):
        grant(wallet, "500", expires_at=now - timedelta(hours=1))
    services.draw_down(wallet=wallet, amount=D("60"), actor=STAFF, idempotency_key="u1")
    assert list(Notification.objects.values_list("kind", flat=True)) == ["low_funds"]


@pytest.mark.django_db
def test_credit_not_yet_effective_does_not_pay_debt_until_it_is(wallet, grant, ledger_ok):
    Wallet.objects.filter(pk=wallet.pk).update(credit_limit=D("100"))
    services.draw_down(wallet=wallet, amount=D("40"), actor=STAFF, idempotency_key="u1")
    tomorrow = timezone.now() + timedelta(days=1)
    future = grant(wallet, "50", effective_at=tomorrow)
    pending = grant(wallet, "30", effective_at=tomorrow, pending=True)
    services.activate_grant(
        grant=pending, external_transaction_id="bank-1", actor=STAFF, idempotency_key="a1"
    )
    wallet.refresh_from_db()
    future.refresh_from_db()
    assert wallet.debt == D("40") and future.remaining == D("50")
    assert wallet.available_funds() == D("60")

    # nothing to settle yet: the job books nothing
    assert services.settle_effective_credit() == 0
    with time_machine.travel(tomorrow + timedelta(minutes=1)):
        assert services.settle_effective_credit() == 1
        assert services.settle_effective_credit() == 0  # once
        wallet.refresh_from_db()
        assert wallet.debt == 0 and wallet.credit_balance == D("40")
        assert wallet.available_funds() == D("140")
    ledger_ok()


@pytest.mark.django_db
def test_the_settle_job_runs_as_a_registered_job(wallet, grant):
    from jobs.models import JobRun
    from wallets.tasks import settle_debts

    Wallet.objects.filter(pk=wallet.pk).update(credit_limit=D("100"))
    services.draw_down(wallet=wallet, amount=D("40"), actor=STAFF, idempotency_key="u1")
    tomorrow = timezone.now() + timedelta(days=1)
    grant(wallet, "50", effective_at=tomorrow)
    with time_machine.travel(tomorrow + timedelta(minutes=1)):
        result = settle_debts()
    assert result["processed"] == 1, result
    assert JobRun.objects.get(job_name="settle_debts").status == "succeeded"
    wallet.refresh_from_db()
    assert wallet.debt == 0


# --- one definition: Python and SQL fed the same random wallets --------------------


HOURS = st.integers(min_value=-72, max_value=72)
AMOUNTS = st.decimals(min_value=D("0"), max_value=D("500"), places=2)
GRANTS = st.lists(
    st.tuples(
        AMOUNTS.filter(lambda a: a > 0),  # amount
        st.sampled_from(["active", "exhausted", "pending", "expired", "voided"]),
        HOURS,  # effective, hours from now
        st.one_of(st.none(), st.integers(min_value=1, max_value=144)),  # lifetime in hours
        st.booleans(),  # restricted
        st.booleans(),  # partly used
    ),
    max_size=6,
)


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(
    grants=GRANTS,
    limit=AMOUNTS,
    increase=AMOUNTS,
    increase_hours=st.one_of(st.none(), HOURS),
    debt=AMOUNTS,
    ask_hours=HOURS,
)
def test_python_and_sql_available_funds_agree(
    alice, grants, limit, increase, increase_hours, debt, ask_hours
):
    """The cached balances are made to agree with random grant rows directly (this
    compares two readers of the same rows, not a ledger)."""
    from wallets.models import Account, CreditGrant

    now = timezone.now()
    wallet = services.open_wallet(customer=alice)
    CreditGrant.objects.filter(wallet=wallet).delete()
    Account.objects.filter(wallet=wallet, kind="grant").delete()
    credit = restricted = D(0)
    for n, (amount, status, effective, lifetime, is_restricted, used) in enumerate(grants):
        remaining = (amount / 2).quantize(D("0.01")) if used else amount
        if status not in ("active", "exhausted"):
            remaining = D(0)
        if status == "exhausted":
            remaining = D(0)
        starts = now + timedelta(hours=effective)
        account = Account.objects.create(kind="grant", currency="USD", wallet=wallet)
        CreditGrant.objects.create(
            wallet=wallet, account=account, name=f"g{n}", kind="paid", amount=amount,
            remaining=remaining, currency="USD", effective_at=starts,
            expires_at=starts + timedelta(hours=lifetime) if lifetime else None, status=status,
            restricted=is_restricted, condition_dimensions={"r": "x"} if is_restricted else {},
        )  # fmt: skip
        credit += remaining
        restricted += remaining if is_restricted else 0
    Wallet.objects.filter(pk=wallet.pk).update(
        credit_balance=credit, restricted_balance=restricted, debt=debt, credit_limit=limit,
        temporary_credit_increase=increase,
        temporary_increase_valid_until=(
            now + timedelta(hours=increase_hours) if increase_hours is not None else None
        ),
    )  # fmt: skip
    wallet.refresh_from_db()
    at = now + timedelta(hours=ask_hours)
    assert wallet.available_funds(at) == sql_available(wallet, at)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT wallets_effective_credit_limit(credit_limit, temporary_credit_increase,"
            " temporary_increase_valid_until, %s) FROM wallets_wallet WHERE id = %s",
            [at, wallet.pk],
        )
        assert cursor.fetchone()[0] == wallet.effective_credit_limit(at)
