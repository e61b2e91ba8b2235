"""Where a money rule has a Python copy beside its SQL home (wallets/sql/), both
must give the same answer: hypothesis feeds them the same random grant rows.

- draw-down order and eligibility: SQL `wallets_usable_grants` (the draw-down
  functions call it) against `draw_order` and the unrestricted grants the Python
  services spend (debt settlement, transfers);
- "in force at a time": SQL `wallets_grant_in_force` against
  `CreditGrant.objects.in_force` and `CreditGrant.is_in_force`.

(Available funds and the effective credit limit: Python `Wallet.available_funds` /
`effective_credit_limit` against `wallets_available_funds` /
`wallets_effective_credit_limit`, in tests/wallets/test_time_rules.py.)

The rows are written directly (two readers of the same rows are compared, not a
ledger); times are whole hours from one instant so that ties (same expiry, a grant
that starts or ends exactly when asked) are common.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wallets import services
from wallets.models import Account, CreditGrant
from wallets.services.drawdown import _unrestricted_grants

D = Decimal
HOURS = st.integers(min_value=-3, max_value=3)

GRANTS = st.lists(
    st.tuples(
        st.sampled_from(["active", "active", "exhausted", "pending", "expired", "voided"]),
        HOURS,  # effective, hours from now
        st.one_of(st.none(), st.integers(min_value=-2, max_value=6)),  # expiry, hours from now
        st.integers(min_value=0, max_value=2),  # priority
        st.sampled_from(["paid", "free"]),
        st.sampled_from(["none", "item", "dimensions", "both"]),  # condition
        st.booleans(),  # credit left (if live)
    ),
    max_size=8,
)

EXAMPLES = settings(
    max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip


def _make_grants(wallet, item, grants, now):
    CreditGrant.objects.filter(wallet=wallet).delete()
    Account.objects.filter(wallet=wallet, kind="grant").delete()
    for n, (status, effective, expiry, priority, kind, condition, left) in enumerate(grants):
        dimensions = {"region": "eu"} if condition in ("dimensions", "both") else {}
        condition_item = item if condition in ("item", "both") else None
        account = Account.objects.create(kind="grant", currency="USD", wallet=wallet)
        CreditGrant.objects.create(
            wallet=wallet, account=account, name=f"g{n}", kind=kind, amount=D(10),
            remaining=D(10) if status == "active" and left else D(0), currency="USD",
            effective_at=now + timedelta(hours=effective),
            expires_at=now + timedelta(hours=expiry) if expiry is not None else None,
            priority=priority, status=status, condition_item=condition_item,
            condition_dimensions=dimensions, restricted=condition != "none",
            specificity=(condition_item is not None) + len(dimensions),
        )  # fmt: skip


def _sql_usable(wallet, item_id, dimensions, at):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM wallets_usable_grants(%s, %s, %s::jsonb, %s, %s) ORDER BY before",
            [wallet.pk, item_id, dimensions, at, at],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
@EXAMPLES
@given(grants=GRANTS, ask=HOURS)
def test_python_and_sql_draw_the_same_grants_in_the_same_order(alice, calls, grants, ask):
    now = timezone.now().replace(microsecond=0)
    wallet = services.open_wallet(customer=alice)
    _make_grants(wallet, calls, grants, now)
    at = now + timedelta(hours=ask)

    # An event no condition matches draws from unrestricted credit only: the credit
    # the Python services spend, in their order.
    python = [grant.pk for grant in _unrestricted_grants(wallet, at)]
    assert _sql_usable(wallet, None, "{}", at) == python

    # An event every condition matches: the most specific conditions first.
    sql = _sql_usable(wallet, calls.pk, '{"region": "eu", "tier": "gold"}', at)
    in_python_order = sorted(CreditGrant.objects.filter(pk__in=sql), key=services.draw_order)
    assert sql == [grant.pk for grant in in_python_order]
    assert set(sql) == {
        grant.pk
        for grant in CreditGrant.objects.in_force(at).filter(wallet=wallet, remaining__gt=0)
    }


@pytest.mark.django_db
@EXAMPLES
@given(grants=GRANTS, ask=HOURS)
def test_python_and_sql_agree_which_grants_are_in_force(alice, calls, grants, ask):
    now = timezone.now().replace(microsecond=0)
    wallet = services.open_wallet(customer=alice)
    _make_grants(wallet, calls, grants, now)
    at = now + timedelta(hours=ask)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM wallets_creditgrant WHERE wallet_id = %s AND status = 'active'"
            " AND wallets_grant_in_force(effective_at, expires_at, %s)",
            [wallet.pk, at],
        )
        sql = {row[0] for row in cursor.fetchall()}
    assert sql == set(
        CreditGrant.objects.in_force(at).filter(wallet=wallet).values_list("pk", flat=True)
    )
    assert sql == {
        grant.pk
        for grant in CreditGrant.objects.filter(wallet=wallet, status="active")
        if grant.is_in_force(at)
    }
