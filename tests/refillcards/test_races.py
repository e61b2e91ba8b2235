"""Many customers redeem one card at the same moment: real parallel clients (one
thread and one PostgreSQL connection each). Exactly one succeeds; the others get
the answer an unknown code gets; one credit, one grant, one payment; check_ledger
clean."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from invoices.models import Payment
from refillcards import codes, services
from refillcards.errors import CardRefused
from refillcards.models import RefillCard
from tests.factories import CustomerFactory, PartnerFactory
from tests.refillcards.conftest import STAFF
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, LedgerTransaction

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
CLIENTS = 32


def test_32_simultaneous_redemptions_of_one_card_exactly_one_succeeds():
    partner = PartnerFactory(name="Racing Partner")
    customers = [CustomerFactory(partner=partner) for _ in range(CLIENTS)]
    series = services.create_series(
        prefix="RC", quantity=1, amount=Decimal("20"), currency="USD", partner=partner,
        valid_until=timezone.now() + timedelta(days=1), actor=STAFF,
    )  # fmt: skip
    _, rows = services.export_rows(series=series, actor=STAFF, format="csv")
    code = next(rows).code
    start = threading.Barrier(CLIENTS)

    def client(n: int) -> tuple[str, str]:
        try:
            start.wait()
            try:
                result = services.redeem_card(
                    code=code, customer=customers[n], actor=STAFF, channel="portal",
                    client_ip=f"203.0.113.{n}",
                )  # fmt: skip
            except CardRefused as exc:
                return ("refused", str(exc))
            return ("redeemed", result.card.serial)
        except Exception as exc:  # anything else (deadlock, database error) fails the test
            return ("unexpected", f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(client, range(CLIENTS)))

    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("unexpected") == 0, [o for o in outcomes if o[0] == "unexpected"]
    assert kinds.count("redeemed") == 1
    with pytest.raises(CardRefused) as unknown:
        services.redeem_card(code=codes.new_code("RC"), customer=customers[0], actor=STAFF,
                             channel="portal", client_ip="198.51.100.1")  # fmt: skip
    assert {text for kind, text in outcomes if kind == "refused"} == {str(unknown.value)}
    card = RefillCard.objects.get(series=series)
    assert card.status == "used"
    assert CreditGrant.objects.filter(kind="refill_card").count() == 1
    assert Payment.objects.filter(method="refill_card").count() == 1
    assert LedgerTransaction.objects.count() == 1
    assert card.grant.wallet.customer == card.used_by
    assert find_problems() == []
