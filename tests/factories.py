"""factory-boy factories and the fixtures built on them (alice, bob, ...)."""

import factory
import pytest
from django.contrib.auth import get_user_model

from billing.models import Customer, CustomerClass, Partner, PortalUser


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Partner {n}")


class CustomerClassFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CustomerClass
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Class {n}")


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    name = factory.Faker("company")
    email = factory.Faker("email")
    partner = factory.SubFactory(PartnerFactory, name="Northwind")
    currency = "USD"
    balance_model = Customer.BalanceModel.PREPAID


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("s3cret-pass")


def customer_with_login(username: str, **kwargs) -> Customer:
    customer = CustomerFactory(name=username.title(), **kwargs)
    PortalUser.objects.create(user=UserFactory(username=username), customer=customer)
    return customer


@pytest.fixture
def alice(db) -> Customer:
    return customer_with_login("alice")


@pytest.fixture
def bob(db) -> Customer:
    return customer_with_login("bob")


@pytest.fixture
def charlie(db) -> Customer:
    return customer_with_login(
        "charlie", balance_model=Customer.BalanceModel.POSTPAID, currency="EUR"
    )
