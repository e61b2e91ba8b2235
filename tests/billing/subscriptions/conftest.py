from decimal import Decimal

import pytest

from billing.models.subscriptions import Service, ServiceRate
from wallets.actors import Actor

STAFF = Actor.system("tests")


@pytest.fixture
def service(db):
    """service("TV basic", per_period="30") → a service with a USD rate."""

    def make(name="TV basic", *, per_period="0", per_day="0", currency="USD"):
        svc = Service.objects.create(code=name.lower().replace(" ", "-"), name=name)
        ServiceRate.objects.create(
            service=svc, currency=currency, per_period=Decimal(per_period), per_day=Decimal(per_day)
        )
        return svc

    return make
