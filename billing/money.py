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
