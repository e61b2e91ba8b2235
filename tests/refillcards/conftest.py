import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from refillcards import services
from refillcards.models import RefillCard
from tests.wallets.conftest import ledger_ok  # noqa: F401 - shared fixture
from wallets.actors import Actor

STAFF = Actor.system("tests")


@pytest.fixture(autouse=True)
def no_lockouts(settings):
    """Lockout counters live in Redis, which outlives a test and is shared by the
    xdist workers: each test counts under its own namespace."""
    settings.REFILL_CARD_CACHE_NAMESPACE = f"refill-test-{uuid.uuid4().hex}"


@pytest.fixture
def series_of(alice):
    """series_of(3) → a ready series of 3 cards of 10.00 USD for Alice's partner,
    with its plain codes (as the export prints them)."""

    def make(quantity=3, *, amount="10", currency="USD", partner=None, prefix="NW", days=30):
        series = services.create_series(
            prefix=prefix, quantity=quantity, amount=Decimal(amount), currency=currency,
            partner=partner or alice.partner, valid_until=timezone.now() + timedelta(days=days),
            actor=STAFF,
        )  # fmt: skip
        total, rows = services.export_rows(series=series, actor=STAFF, format="csv")
        plain = [row.code for row in rows]
        assert len(plain) == total == quantity
        return series, plain

    return make


def card_of(series, n=1) -> RefillCard:
    return RefillCard.objects.get(series=series, number=n)
