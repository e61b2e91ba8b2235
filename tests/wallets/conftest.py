from decimal import Decimal

import pytest

from tests.billing.conftest import api_key, calls, credit, price  # noqa: F401 - shared fixtures
from wallets import services
from wallets.actors import Actor
from wallets.ledger_check import find_problems

STAFF = Actor.system("tests")


class Keys:
    """Fresh idempotency keys: keys.next() → 'k1', 'k2', ..."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"k{self.n}"


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def wallet(alice):
    return services.open_wallet(customer=alice)


@pytest.fixture
def bob_wallet(bob):
    return services.open_wallet(customer=bob)


@pytest.fixture
def grant(keys):
    """grant(wallet, "10") → an active paid grant."""

    def make(wallet, amount, **kwargs):
        kwargs.setdefault("kind", "paid")
        kwargs.setdefault("name", f"Credits {amount}")
        return services.grant_credit(
            wallet=wallet,
            amount=Decimal(amount),
            actor=STAFF,
            idempotency_key=keys.next(),
            **kwargs,
        )

    return make


@pytest.fixture
def ledger_ok():
    """Call at the end of a scenario: the ledger proves every cached balance."""

    def check():
        problems = find_problems()
        assert problems == []

    return check
