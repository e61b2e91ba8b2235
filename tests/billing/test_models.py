import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from billing.models import Customer, CustomerClass
from tests.factories import CustomerClassFactory, CustomerFactory


@pytest.mark.django_db
def test_account_numbers_come_from_a_sequence_and_are_unique():
    first, second = CustomerFactory(), CustomerFactory()
    assert first.account_number.startswith("A")
    assert first.account_number != second.account_number
    assert int(second.account_number[1:]) > int(first.account_number[1:])


@pytest.mark.django_db
def test_explicit_account_number_is_kept_and_duplicates_are_refused():
    CustomerFactory(account_number="ACME-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        CustomerFactory(account_number="ACME-1")


@pytest.mark.django_db
def test_billing_anchor_day_must_be_within_1_and_28():
    customer = CustomerFactory.build(billing_anchor_day=31)
    customer.partner.save()
    with pytest.raises(ValidationError) as excinfo:
        customer.full_clean()
    assert "billing_anchor_day" in excinfo.value.message_dict


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("policy", "class_allows", "expected"),
    [
        (Customer.TransferPolicy.YES, False, True),
        (Customer.TransferPolicy.NO, True, False),
        (Customer.TransferPolicy.INHERIT, True, True),
        (Customer.TransferPolicy.INHERIT, False, False),
    ],
)
def test_transfer_policy_follows_customer_then_class(policy, class_allows, expected):
    klass = CustomerClassFactory(transfers_allowed=class_allows)
    customer = CustomerFactory(customer_class=klass, transfer_policy=policy)
    assert customer.transfers_allowed() is expected


@pytest.mark.django_db
def test_inherit_without_a_class_means_no_transfers():
    assert (
        CustomerFactory(transfer_policy="inherit", customer_class=None).transfers_allowed() is False
    )


@pytest.mark.django_db
def test_class_maximum_increase_duration():
    assert CustomerClass(max_temporary_increase_days=14).max_temporary_increase_duration.days == 14
    assert CustomerClass().max_temporary_increase_duration is None
