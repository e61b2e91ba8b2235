"""Balance warning thresholds (PortaBilling's "low funds" and "credit limit" warnings).

Staff type them as comma-separated lists on the customer:

- low funds: amounts in the customer's currency, e.g. ``50, 20, 5`` — a warning
  goes out each time the available funds fall below one of them;
- credit limit: percentages of the credit limit in use, e.g. ``80%, 90%, 100%`` —
  a warning goes out each time the share of the limit in use reaches one of them.

The lists are parsed here (one place, with messages that say what to fix) and
copied onto the customer's wallets, where a database trigger watches every change
of the cached balances — see ``wallets/migrations/0006_balance_warnings.py``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

from billing.money import decimal_text

MAX_THRESHOLDS = 10


def _items(text: str) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _number(item: str, what: str) -> Decimal:
    try:
        value = Decimal(item)
    except InvalidOperation:
        raise ValidationError(
            f"“{item}” is not a number. Enter {what} separated by commas."
        ) from None
    if not value.is_finite():
        raise ValidationError(f"“{item}” is not a number. Enter {what} separated by commas.")
    return value


def _check_count(values: list[Decimal]) -> None:
    if len(values) > MAX_THRESHOLDS:
        raise ValidationError(f"Enter at most {MAX_THRESHOLDS} thresholds.")
    if len(set(values)) != len(values):
        raise ValidationError("Each threshold may appear only once.")


def parse_amounts(text: str) -> list[Decimal]:
    """``"50, 20, 5"`` → ``[50, 20, 5]`` (largest first); amounts must be > 0 with at
    most two decimals."""
    values = []
    for item in _items(text):
        value = _number(item, "amounts such as 50, 20, 5")
        if value <= 0:
            raise ValidationError(f"“{item}”: a low-funds threshold must be more than zero.")
        if value.as_tuple().exponent < -2:  # type: ignore[operator]
            raise ValidationError(f"“{item}”: use at most two decimals.")
        if value >= Decimal("1e12"):
            raise ValidationError(f"“{item}” is too large.")
        values.append(value)
    _check_count(values)
    return sorted(values, reverse=True)


def parse_percents(text: str) -> list[Decimal]:
    """``"80%, 90%, 100%"`` (the % sign is optional) → ``[80, 90, 100]``; each must be
    more than 0 and at most 100."""
    values = []
    for item in _items(text):
        value = _number(item.removesuffix("%").strip(), "percentages such as 80%, 90%, 100%")
        if not 0 < value <= 100:
            raise ValidationError(f"“{item}”: a percentage must be more than 0 and at most 100.")
        if value.as_tuple().exponent < -2:  # type: ignore[operator]
            raise ValidationError(f"“{item}”: use at most two decimals.")
        values.append(value)
    _check_count(values)
    return sorted(values)


def validate_amounts(text: str) -> None:
    parse_amounts(text)


def validate_percents(text: str) -> None:
    parse_percents(text)


def format_amounts(values: list[Decimal]) -> str:
    return ", ".join(decimal_text(value) for value in values)


def format_percents(values: list[Decimal]) -> str:
    return ", ".join(f"{decimal_text(value)}%" for value in values)


def normalise(owner: object) -> None:
    """Rewrite `owner`'s two lists (a Customer or a CustomerClass) in their stored
    form, "50, 20, 5" and "80%, 90%"; a bad list raises ValidationError."""
    amounts = parse_amounts(owner.low_funds_thresholds)  # type: ignore[attr-defined]
    percents = parse_percents(owner.credit_limit_warnings)  # type: ignore[attr-defined]
    owner.low_funds_thresholds = format_amounts(amounts)  # type: ignore[attr-defined]
    owner.credit_limit_warnings = format_percents(percents)  # type: ignore[attr-defined]
