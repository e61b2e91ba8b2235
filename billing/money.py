"""Money as people read it."""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")


def decimal_text(value: Decimal) -> str:
    """A decimal as plain text without trailing zeros or exponent ("1.5", "100")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def amount_text(value: Decimal | None) -> str:
    """100.000000 → "100.00", 12.345000 → "12.345", 0.000100 → "0.0001", None → "—":
    two decimals at least, more only where the value has them (ledger amounts keep six)."""
    if value is None:
        return "—"
    trimmed = value.normalize()
    exponent = trimmed.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        trimmed = value.quantize(CENT)
    return f"{trimmed:f}"


# Stripe's amounts are integers in the currency's smallest unit. Most currencies
# have two decimals; these have none, and these have three (Stripe wants the last
# digit to be 0 for them, so two decimals on our side are still exact).
ZERO_DECIMAL_CURRENCIES = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
)
THREE_DECIMAL_CURRENCIES = frozenset("BHD JOD KWD OMR TND".split())


def minor_unit_exponent(currency: str) -> int:
    code = currency.upper()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def to_stripe_amount(amount: Decimal, currency: str) -> int:
    """An exact Decimal amount as Stripe's integer minor units; refuses to round."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"amounts are Decimal, not {type(amount).__name__}")
    scaled = amount.scaleb(minor_unit_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(
            f"{amount} {currency.upper()} is not a whole number of the currency's minor unit"
        )
    minor = int(scaled)
    if minor_unit_exponent(currency) == 3 and minor % 10:
        raise ValueError(f"Stripe charges {currency.upper()} in multiples of 0.010, not {amount}")
    return minor


def from_stripe_amount(minor: int, currency: str) -> Decimal:
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"Stripe amounts are integers, not {type(minor).__name__}")
    return Decimal(minor).scaleb(-minor_unit_exponent(currency))
