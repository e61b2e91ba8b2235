"""Calendar arithmetic for billing: billing periods from a customer's anchor day,
and "a number of days, weeks, months or years" added to a date.

Pure functions of dates (no database), in the bottom layer so every app uses the
same definition: recurring grants, usage invoices and expiry all agree on where a
period starts. A period starts at midnight (settings.TIME_ZONE) on the anchor day
of a month and ends where the next one starts.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db import models
from django.utils import timezone


class PeriodUnit(models.TextChoices):
    DAYS = "days", "days"
    WEEKS = "weeks", "weeks"
    MONTHS = "months", "months"
    YEARS = "years", "years"


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months; the 31st becomes the last day of a shorter month."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return day.replace(year=year, month=month + 1, day=min(day.day, last))


def add_period(moment: datetime, count: int, unit: str) -> datetime:
    """`moment` plus `count` units, on the local wall clock: one month after
    31 January 10:00 is 28 (or 29) February 10:00, one day after a DST change is
    the same clock time."""
    if count < 0:
        raise ValueError("count must not be negative")
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    if unit == PeriodUnit.DAYS:
        shifted = local + timedelta(days=count)
    elif unit == PeriodUnit.WEEKS:
        shifted = local + timedelta(weeks=count)
    elif unit == PeriodUnit.MONTHS:
        shifted = datetime.combine(add_months(local.date(), count), local.timetz())
    elif unit == PeriodUnit.YEARS:
        shifted = datetime.combine(add_months(local.date(), 12 * count), local.timetz())
    else:
        raise ValueError(f"unknown period unit {unit!r}; use days, weeks, months or years")
    return shifted  # zoneinfo gives the new wall-clock time its own UTC offset


def _anchor_in(year: int, month: int, anchor_day: int) -> date:
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class BillingPeriod:
    """[start, end) in dates; `starts_at`/`ends_at` are the aware instants."""

    start: date
    end: date

    @property
    def starts_at(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.start, time.min))

    @property
    def ends_at(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.end, time.min))

    def next(self, anchor_day: int) -> BillingPeriod:
        return period_starting(self.end, anchor_day)

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} – {self.end - timedelta(days=1):%Y-%m-%d}"


def period_starting(start: date, anchor_day: int) -> BillingPeriod:
    """The period that begins on `start` (an anchor date)."""
    following = add_months(start.replace(day=1), 1)
    return BillingPeriod(start, _anchor_in(following.year, following.month, anchor_day))


def period_containing(day: date | datetime, anchor_day: int) -> BillingPeriod:
    """The billing period a date (or instant, in local time) falls in."""
    if not 1 <= anchor_day <= 28:
        raise ValueError("anchor_day must be between 1 and 28")
    if isinstance(day, datetime):
        day = timezone.localdate(day) if timezone.is_aware(day) else day.date()
    this_month = _anchor_in(day.year, day.month, anchor_day)
    if day >= this_month:
        return period_starting(this_month, anchor_day)
    previous = add_months(day.replace(day=1), -1)
    return period_starting(_anchor_in(previous.year, previous.month, anchor_day), anchor_day)
