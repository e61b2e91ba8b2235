"""Billing periods from the anchor day, and calendar arithmetic."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings

from billing.periods import BillingPeriod, add_months, add_period, period_containing


@pytest.mark.parametrize(
    "day, anchor, start, end",
    [
        (date(2026, 3, 15), 1, date(2026, 3, 1), date(2026, 4, 1)),
        (date(2026, 3, 1), 1, date(2026, 3, 1), date(2026, 4, 1)),
        (date(2026, 2, 28), 1, date(2026, 2, 1), date(2026, 3, 1)),
        (date(2026, 3, 14), 15, date(2026, 2, 15), date(2026, 3, 15)),
        (date(2026, 3, 15), 15, date(2026, 3, 15), date(2026, 4, 15)),
        (date(2026, 1, 10), 28, date(2025, 12, 28), date(2026, 1, 28)),
        (date(2026, 12, 31), 28, date(2026, 12, 28), date(2027, 1, 28)),
    ],
)
def test_period_containing_a_day(day, anchor, start, end):
    period = period_containing(day, anchor)
    assert (period.start, period.end) == (start, end)
    assert period.next(anchor) == period_containing(end, anchor)


def test_a_period_starts_at_local_midnight():
    with override_settings(TIME_ZONE="Europe/Berlin"):
        period = BillingPeriod(date(2026, 3, 1), date(2026, 4, 1))
        assert period.starts_at == datetime(2026, 3, 1, tzinfo=ZoneInfo("Europe/Berlin"))
        # 23:30 UTC on 28 February is already 1 March in Berlin
        assert period_containing(datetime(2026, 2, 28, 23, 30, tzinfo=UTC), 1).start == date(
            2026, 3, 1
        )
    assert str(period) == "2026-03-01 – 2026-03-31"


def test_anchor_day_must_be_one_to_28():
    with pytest.raises(ValueError):
        period_containing(date(2026, 1, 1), 29)


def test_months_clamp_to_the_end_of_a_shorter_month():
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2026, 3, 31), -1) == date(2026, 2, 28)
    assert add_months(date(2026, 11, 30), 14) == date(2028, 1, 30)


def test_add_period_keeps_the_local_wall_clock():
    with override_settings(TIME_ZONE="Europe/Berlin"):
        start = datetime(2026, 3, 28, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # before DST
        assert add_period(start, 1, "days") == datetime(
            2026, 3, 29, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")
        )
        # 23 hours later in UTC: the clock moved forward that night
        assert add_period(start, 1, "days").astimezone(UTC) == datetime(2026, 3, 29, 8, tzinfo=UTC)
    start = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert add_period(start, 1, "years") == datetime(2029, 2, 28, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="unknown period unit"):
        add_period(start, 1, "fortnights")
