"""Recurring grants: once per billing period, at the period boundary, catching up."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from jobs.models import JobRun
from tests.wallets.conftest import STAFF
from wallets import recurring, services, tasks
from wallets.models import CreditGrant, RecurringGrantRule

D = Decimal
pytestmark = pytest.mark.django_db


def at(*args):
    return datetime(*args, tzinfo=UTC)


def run(when, **kwargs):
    with time_machine.travel(when, tick=False):
        return list(recurring.issue_recurring_grant_batches(**kwargs))


def issued(rule):
    return list(
        CreditGrant.objects.filter(source_type="recurring_rule", source_id=str(rule.pk)).order_by(
            "effective_at"
        )
    )


@pytest.fixture
def rule(wallet):
    def make(**kwargs):
        fields = {"wallet": wallet, "name": "Monthly bonus", "amount": D("25"), "kind": "free"}
        return RecurringGrantRule.objects.create(**{**fields, **kwargs})

    return make


def test_a_period_is_granted_from_its_first_instant(alice, rule, ledger_ok):
    alice.billing_anchor_day = 15
    alice.save()
    monthly = rule(starts_on=date(2026, 3, 15))

    assert run(at(2026, 3, 14, 23, 59, 59)) == []
    assert [b.issued for b in run(at(2026, 3, 15))] == [1]
    assert run(at(2026, 3, 15, 18)) == []  # same period: nothing more
    assert run(at(2026, 4, 14, 23, 59, 59)) == []
    assert [b.issued for b in run(at(2026, 4, 15))] == [1]

    first, second = issued(monthly)
    assert first.effective_at == at(2026, 3, 15) and second.effective_at == at(2026, 4, 15)
    assert first.name == "Monthly bonus (2026-03-15 – 2026-04-14)"
    assert first.issued_by.idempotency_key == f"recurring:{monthly.pk}:2026-03-15"
    assert first.issued_by.actor == "job:issue_recurring_grants"
    assert (first.kind, first.status, first.amount, first.funding_code) == (
        "free",
        "active",
        D("25"),
        "promotions",
    )
    assert first.expires_at == at(2027, 3, 15)  # the default: 12 months
    monthly.refresh_from_db()
    assert monthly.next_period_start == date(2026, 5, 15)
    ledger_ok()


def test_missed_periods_are_caught_up_exactly_once(wallet, rule, ledger_ok):
    monthly = rule(starts_on=date(2026, 1, 1))
    batches = run(at(2026, 4, 10, 8))
    assert sum(b.issued for b in batches) == 4
    assert [g.effective_at for g in issued(monthly)] == [
        at(2026, 1, 1), at(2026, 2, 1), at(2026, 3, 1), at(2026, 4, 1),
    ]  # fmt: skip
    assert run(at(2026, 4, 10, 9)) == []

    # Even a lost cursor cannot issue a period twice: the keys replay.
    RecurringGrantRule.objects.filter(pk=monthly.pk).update(next_period_start=None)
    assert sum(b.issued for b in run(at(2026, 4, 10, 10))) == 4
    assert len(issued(monthly)) == 4
    wallet.refresh_from_db()
    assert wallet.credit_balance == D("100")
    ledger_ok()


def test_a_rule_starting_mid_period_is_granted_from_its_start(rule):
    monthly = rule(starts_on=date(2026, 3, 20))
    run(at(2026, 3, 20, 9))
    (grant,) = issued(monthly)
    assert grant.effective_at == at(2026, 3, 20)
    assert grant.name == "Monthly bonus (2026-03-01 – 2026-03-31)"


def test_no_grant_for_periods_from_the_end_date_on(rule):
    monthly = rule(starts_on=date(2026, 1, 1), ends_on=date(2026, 3, 1))
    run(at(2026, 6, 1))
    assert [g.effective_at for g in issued(monthly)] == [at(2026, 1, 1), at(2026, 2, 1)]
    assert run(at(2026, 7, 1)) == []


def test_inactive_and_future_rules_issue_nothing(rule):
    rule(starts_on=date(2026, 1, 1), active=False)
    rule(starts_on=date(2026, 5, 1))
    assert run(at(2026, 4, 30, 23)) == []
    assert CreditGrant.objects.count() == 0


def test_a_paused_rule_resumes_from_the_current_period(rule):
    monthly = rule(starts_on=date(2026, 1, 1))
    run(at(2026, 1, 5))
    recurring.pause_rules(rule_ids=[monthly.pk])
    assert run(at(2026, 2, 5)) == []
    with time_machine.travel(at(2026, 4, 5), tick=False):
        assert recurring.resume_rules(rule_ids=[monthly.pk]) == 1
    run(at(2026, 4, 5))
    assert [g.effective_at for g in issued(monthly)] == [at(2026, 1, 1), at(2026, 4, 1)]


def test_paid_reconcile_later_rule_with_condition_and_own_expiry(rule, wallet):
    from billing.models import ProductItem

    calls = ProductItem.objects.create(code="api-calls", name="API calls")
    monthly = rule(
        kind="paid", pending=True, condition_item=calls, condition_dimensions={"region": "eu"},
        expiry_count=1, expiry_unit="months", priority=5, starts_on=date(2026, 1, 31),
    )  # fmt: skip
    run(at(2026, 2, 2))
    jan, feb = issued(monthly)
    assert (jan.status, jan.kind, jan.remaining, jan.priority) == ("pending", "paid", 0, 5)
    assert (
        jan.restricted
        and jan.condition_item == calls
        and jan.condition_dimensions == {"region": "eu"}
    )
    assert jan.expires_at == at(2026, 2, 28)  # 31 January + 1 month
    assert feb.expires_at == at(2026, 3, 1)
    wallet.refresh_from_db()
    assert wallet.credit_balance == 0  # pending: Requires Action


def test_many_rules_are_issued_in_batches_and_far_behind_rules_catch_up(wallet, bob_wallet, rule):
    old = rule(starts_on=date(2023, 1, 1))  # 40 periods behind
    news = [rule(starts_on=date(2026, 4, 1)) for _ in range(3)]
    bobs = RecurringGrantRule.objects.create(
        wallet=bob_wallet, name="Bob's", amount=D("1"), starts_on=date(2026, 4, 1)
    )
    batches = run(at(2026, 4, 2), batch_size=2)
    assert sum(b.issued for b in batches) == 40 + 3 + 1
    assert len(issued(old)) == 40 and all(len(issued(r)) == 1 for r in [*news, bobs])
    assert run(at(2026, 4, 3)) == []


def test_a_failing_rule_is_reported_and_the_others_are_issued(rule, wallet, ledger_ok):
    broken = rule(starts_on=date(2026, 4, 1))
    fine = rule(starts_on=date(2026, 4, 1), name="Other")
    # The key of broken's April grant was used for something else: a conflict.
    services.grant_credit(
        wallet=wallet, amount=D("1"), kind="free", name="x", actor=STAFF,
        idempotency_key=f"recurring:{broken.pk}:2026-04-01",
    )  # fmt: skip
    with time_machine.travel(at(2026, 4, 2), tick=False):
        result = tasks.issue_recurring_grants()
    assert (result["status"], result["processed"], result["failed"]) == ("succeeded", 1, 1)
    run_row = JobRun.objects.get(job_name="issue_recurring_grants")
    assert f"rule {broken.pk} (Monthly bonus)" in run_row.error_summary
    assert "already used for a different request" in run_row.error_summary
    assert len(issued(fine)) == 1 and issued(broken) == []
    broken.refresh_from_db()
    assert broken.next_period_start is None  # not moved on: fixed, it issues next run
    ledger_ok()


def test_rule_validation_names_the_field_to_fix(wallet):
    from django.core.exceptions import ValidationError

    bad = RecurringGrantRule(
        wallet=wallet, name="x", amount=D("1"), kind="free", pending=True, expiry_count=3,
        condition_dimensions={"region": ["eu"]}, starts_on=date(2026, 1, 1), ends_on=date(2025, 1, 1),
    )  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        bad.full_clean()
    assert set(caught.value.message_dict) >= {
        "expiry_unit",
        "ends_on",
        "pending",
        "condition_dimensions",
    }


def test_the_next_period_is_issued_when_the_clock_passes_midnight(rule):
    monthly = rule(starts_on=date(2026, 1, 1))
    run(at(2026, 1, 31, 23, 59, 59))
    assert len(issued(monthly)) == 1
    run(at(2026, 1, 31, 23, 59, 59) + timedelta(seconds=1))
    assert len(issued(monthly)) == 2


def test_one_rule_can_be_issued_alone(rule):
    first, other = rule(starts_on=date(2026, 1, 1)), rule(starts_on=date(2026, 1, 1))
    with time_machine.travel(at(2026, 1, 2), tick=False):
        batch = recurring.issue_recurring_grants(rule_ids=[first.pk])
    assert batch.issued == 1 and len(issued(first)) == 1 and issued(other) == []
