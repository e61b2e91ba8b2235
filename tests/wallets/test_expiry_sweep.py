"""The expiry sweep: set-based batches that book each due grant to breakage once."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db.models import Sum

from jobs.models import JobRun
from tests.wallets.conftest import STAFF
from wallets import services, tasks
from wallets.models import Account, CreditGrant, Entry, LedgerTransaction

D = Decimal
T = datetime(2026, 3, 31, 23, 0, tzinfo=UTC)  # when the grants below expire
BEFORE = T - timedelta(days=30)

pytestmark = pytest.mark.django_db


@pytest.fixture
def due_grant(grant):
    """A grant made 30 days before T that expires at T (or `expires_at`)."""

    def make(wallet, amount, expires_at=T, **kwargs):
        with time_machine.travel(BEFORE, tick=False):
            return grant(wallet, amount, expires_at=expires_at, **kwargs)

    return make


def breakage_total(currency="USD"):
    account = Account.objects.get(kind="system", code="breakage", currency=currency)
    return Entry.objects.filter(credit_account=account).aggregate(t=Sum("amount"))["t"] or D(0)


def expiry_of(grant):
    return LedgerTransaction.objects.get(idempotency_key=f"expire:grant:{grant.pk}")


def test_a_grant_expires_at_its_expiry_instant_not_a_microsecond_before(
    wallet, due_grant, ledger_ok
):
    g = due_grant(wallet, "10")
    with time_machine.travel(T - timedelta(microseconds=1), tick=False):
        assert services.expire_due_grants().selected == 0
    with time_machine.travel(T, tick=False):
        batch = services.expire_due_grants()
    assert (batch.selected, batch.expired, batch.breakage) == (1, 1, D("10"))
    g.refresh_from_db()
    wallet.refresh_from_db()
    assert g.status == "expired" and g.remaining == 0 and g.ended_at == T
    assert wallet.credit_balance == 0
    tx = expiry_of(g)
    assert (tx.kind, tx.amount, tx.effective_at, tx.actor) == (
        "expiry",
        D("10"),
        T,
        "job:expire_grants",
    )
    assert (tx.balance_after, tx.restricted_after, tx.debt_after) == (0, 0, 0)
    assert tx.memo == "Credits 10 expired" and tx.metadata == {"grant": g.pk}
    assert breakage_total() == D("10")
    ledger_ok()


def test_each_transaction_shows_the_running_balance_of_its_wallet(
    wallet, bob_wallet, due_grant, grant, ledger_ok
):
    a = due_grant(wallet, "10")
    b = due_grant(wallet, "20.5", condition_dimensions={"region": "eu"})  # restricted
    c = due_grant(wallet, "5.000001")
    keeps = grant(wallet, "7")  # no expiry
    later = due_grant(wallet, "3", expires_at=T + timedelta(days=1))
    bobs = due_grant(bob_wallet, "2")
    wallet.refresh_from_db()
    assert (wallet.credit_balance, wallet.restricted_balance) == (D("45.500001"), D("20.5"))

    with time_machine.travel(T + timedelta(hours=2), tick=False):
        batch = services.expire_due_grants()
    assert (batch.expired, batch.breakage) == (4, D("37.500001"))
    after = {g.pk: expiry_of(g) for g in (a, b, c)}
    assert after[a.pk].pk < after[b.pk].pk < after[c.pk].pk  # booked in grant order
    assert [(after[g.pk].balance_after, after[g.pk].restricted_after) for g in (a, b, c)] == [
        (D("35.500001"), D("20.5")),
        (D("15.000001"), D("0")),
        (D("10"), D("0")),
    ]
    assert expiry_of(bobs).balance_after == 0
    wallet.refresh_from_db()
    assert (wallet.credit_balance, wallet.restricted_balance) == (D("10"), D("0"))
    assert {g.status for g in CreditGrant.objects.filter(pk__in=[keeps.pk, later.pk])} == {"active"}
    ledger_ok()


def test_used_exhausted_and_pending_grants_expire_with_only_what_is_left(
    wallet, due_grant, ledger_ok
):
    used = due_grant(wallet, "10", priority=1)
    exhausted = due_grant(wallet, "4", priority=0)
    pending = due_grant(wallet, "50", pending=True)
    with time_machine.travel(BEFORE + timedelta(days=1), tick=False):
        services.draw_down(wallet=wallet, amount=D("6.5"), actor=STAFF, idempotency_key="u1")
    exhausted.refresh_from_db()
    assert exhausted.status == "exhausted"

    with time_machine.travel(T, tick=False):
        batch = services.expire_due_grants()
    assert (batch.expired, batch.breakage) == (3, D("7.5"))
    assert [e.amount for e in expiry_of(used).entries.all()] == [D("7.5")]
    assert not expiry_of(exhausted).entries.exists() and expiry_of(exhausted).amount == 0
    assert not expiry_of(pending).entries.exists()
    assert set(CreditGrant.objects.values_list("status", flat=True)) == {"expired"}
    ledger_ok()


def test_the_sweep_and_expire_grant_never_both_book_a_grant(wallet, due_grant, ledger_ok):
    first, second = due_grant(wallet, "10"), due_grant(wallet, "3")
    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        by_hand = services.expire_grant(grant=first, actor=STAFF)
        batch = services.expire_due_grants()
        assert (batch.selected, batch.expired) == (1, 1)  # only the second was still due
        # the sweep used expire_grant's key and request fingerprint: a replay, no conflict
        swept = expiry_of(second)
        assert services.expire_grant(grant=second, actor=STAFF) == swept
        assert services.expire_grant(grant=first, actor=STAFF) == by_hand
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 2
    assert breakage_total() == D("13")
    ledger_ok()


def test_a_rerun_books_nothing(wallet, bob_wallet, due_grant, ledger_ok):
    for n in range(5):
        due_grant(wallet if n % 2 else bob_wallet, f"{n + 1}.25")
    with time_machine.travel(T, tick=False):
        first = list(services.expire_due_grant_batches(batch_size=2))
        assert [b.expired for b in first] == [2, 2, 1]
        assert list(services.expire_due_grant_batches(batch_size=2)) == []
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 5
    assert breakage_total() == D("16.25")
    ledger_ok()


def test_batches_walk_the_due_grants_in_expiry_order(wallet, due_grant, grant, ledger_ok):
    grants = [due_grant(wallet, "1", expires_at=T - timedelta(hours=n)) for n in range(7)]
    voided = due_grant(wallet, "9")
    services.void_grant(grant=voided, actor=STAFF, idempotency_key="void")
    with time_machine.travel(T, tick=False):
        batches = list(services.expire_due_grant_batches(batch_size=3))
    assert [b.selected for b in batches] == [3, 3, 1]
    assert batches[0].cursor == (T - timedelta(hours=4), grants[4].pk)
    order = list(
        LedgerTransaction.objects.filter(kind="expiry")
        .order_by("pk")
        .values_list("metadata", flat=True)
    )
    booked = [m["grant"] for m in order]
    # earliest expiry first, batch by batch; inside a batch in grant order (one wallet)
    assert booked == sorted(g.pk for g in grants[4:]) + sorted(g.pk for g in grants[1:4]) + [
        grants[0].pk
    ]
    voided.refresh_from_db()
    assert voided.status == "voided"
    ledger_ok()


def test_breakage_is_booked_per_currency(wallet, charlie, due_grant, ledger_ok):
    euros = services.open_wallet(customer=charlie)
    due_grant(wallet, "1.5")
    due_grant(euros, "2.25")
    with time_machine.travel(T, tick=False):
        services.expire_due_grants()
    assert (breakage_total("USD"), breakage_total("EUR")) == (D("1.5"), D("2.25"))
    ledger_ok()


def test_the_task_records_a_job_run(wallet, due_grant, ledger_ok):
    for amount in ("1", "2", "3"):
        due_grant(wallet, amount)
    with time_machine.travel(T + timedelta(seconds=5), tick=False):
        result = tasks.expire_grants(batch_size=2)
        again = tasks.expire_grants()
    assert result == {
        "job": "expire_grants", "status": "succeeded", "batches": 2, "processed": 3, "failed": 0,
    }  # fmt: skip
    assert again["processed"] == 0 and again["status"] == "succeeded"
    run = JobRun.objects.filter(job_name="expire_grants").order_by("started_at").first()
    assert run is not None and run.finished_at == T + timedelta(seconds=5)
    ledger_ok()


def test_default_expiry_follows_the_prepaid_credit_settings():
    from wallets.models import PrepaidCreditSettings

    start = datetime(2026, 1, 31, 10, 30, tzinfo=UTC)
    assert services.default_expiry(start) == datetime(2027, 1, 31, 10, 30, tzinfo=UTC)  # 12 months
    settings = PrepaidCreditSettings.load()
    for count, unit, expected in [
        (1, "months", datetime(2026, 2, 28, 10, 30, tzinfo=UTC)),
        (2, "weeks", datetime(2026, 2, 14, 10, 30, tzinfo=UTC)),
        (90, "days", datetime(2026, 5, 1, 10, 30, tzinfo=UTC)),
        (2, "years", datetime(2028, 1, 31, 10, 30, tzinfo=UTC)),
    ]:
        settings.default_expiry_count, settings.default_expiry_unit = count, unit
        settings.save()
        assert services.default_expiry(start) == expected
    assert PrepaidCreditSettings.objects.count() == 1
