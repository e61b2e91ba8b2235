from decimal import Decimal

import pytest

from billing.models import Customer
from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import CreditGrant

D = Decimal


@pytest.fixture
def allow_transfers(alice, bob):
    Customer.objects.filter(pk__in=[alice.pk, bob.pk]).update(transfer_policy="yes")


@pytest.mark.django_db
def test_transfer_moves_unrestricted_credit_into_a_new_grant(
    allow_transfers, wallet, bob_wallet, grant, ledger_ok
):
    grant(wallet, "10")
    grant(wallet, "50", condition_dimensions={"region": "eu"})  # restricted: never transferred
    tx = services.transfer(
        source=wallet, target=bob_wallet, amount=D("4"), actor=STAFF, idempotency_key="t1"
    )
    assert (
        services.transfer(
            source=wallet, target=bob_wallet, amount=D("4"), actor=STAFF, idempotency_key="t1"
        )
        == tx
    )
    wallet.refresh_from_db()
    bob_wallet.refresh_from_db()
    received = CreditGrant.objects.get(wallet=bob_wallet)
    assert received.kind == "transfer" and received.remaining == D("4")
    assert (wallet.credit_balance, bob_wallet.credit_balance) == (D("56"), D("4"))
    assert tx.balance_after == D("56") and tx.metadata["target_balance_after"] == "4.000000"
    with pytest.raises(errors.InsufficientFunds, match="6.000000 of unrestricted credit"):
        services.transfer(
            source=wallet, target=bob_wallet, amount=D("7"), actor=STAFF, idempotency_key="t2"
        )
    ledger_ok()


@pytest.mark.django_db
def test_transfer_reversal_needs_the_received_credit_unspent(
    allow_transfers, wallet, bob_wallet, grant, ledger_ok
):
    grant(wallet, "10")
    tx = services.transfer(
        source=wallet, target=bob_wallet, amount=D("4"), actor=STAFF, idempotency_key="t1"
    )
    services.reverse(transaction_id=tx.pk, actor=STAFF, idempotency_key="r1")
    wallet.refresh_from_db()
    bob_wallet.refresh_from_db()
    assert (wallet.credit_balance, bob_wallet.credit_balance) == (D("10"), D("0"))
    ledger_ok()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("alice_policy", "bob_policy", "side"),
    [("no", "yes", "sender"), ("yes", "no", "receiver"), ("inherit", "yes", "sender")],
)
def test_transfer_policy_yes_no_and_class(
    alice, bob, wallet, bob_wallet, grant, alice_policy, bob_policy, side
):
    Customer.objects.filter(pk=alice.pk).update(transfer_policy=alice_policy)
    Customer.objects.filter(pk=bob.pk).update(transfer_policy=bob_policy)
    grant(wallet, "10")
    with pytest.raises(errors.TransferNotAllowed, match=f"not allowed for the {side}"):
        services.transfer(
            source=wallet, target=bob_wallet, amount=D("1"), actor=STAFF, idempotency_key="t1"
        )


@pytest.mark.django_db
def test_transfer_refuses_other_currency_and_self(
    allow_transfers, alice, wallet, bob_wallet, grant
):
    euro = services.open_wallet(customer=alice, currency="EUR")
    grant(wallet, "10")
    with pytest.raises(errors.CurrencyMismatch, match="no conversion"):
        services.transfer(
            source=wallet, target=euro, amount=D("1"), actor=STAFF, idempotency_key="t1"
        )
    with pytest.raises(errors.TransferNotAllowed, match="itself"):
        services.transfer(
            source=wallet, target=wallet, amount=D("1"), actor=STAFF, idempotency_key="t2"
        )


@pytest.mark.django_db
@pytest.mark.parametrize("class_allows", [True, False])
@pytest.mark.parametrize(("policy", "expected"), [("inherit", None), ("yes", True), ("no", False)])
def test_transfer_policy_matrix_class_by_customer(
    alice, bob, wallet, bob_wallet, grant, class_allows, policy, expected
):
    """PortaBilling's rule: Yes / No on the customer wins; 'As defined by the customer
    class' follows the class. The sender and the receiver are each held to it."""
    from tests.factories import CustomerClassFactory

    klass = CustomerClassFactory(name=f"Class {class_allows}", transfers_allowed=class_allows)
    allowed = class_allows if expected is None else expected
    Customer.objects.filter(pk=alice.pk).update(customer_class=klass, transfer_policy=policy)
    Customer.objects.filter(pk=bob.pk).update(transfer_policy="yes")
    alice.refresh_from_db()
    assert alice.transfers_allowed() is allowed
    grant(wallet, "10")
    for source, target, key in [(wallet, bob_wallet, "out"), (bob_wallet, wallet, "in")]:
        if source == bob_wallet:
            grant(bob_wallet, "3")
        if allowed:
            services.transfer(
                source=source, target=target, amount=D("1"), actor=STAFF, idempotency_key=key
            )
        else:
            side = "sender" if source == wallet else "receiver"
            with pytest.raises(errors.TransferNotAllowed, match=f"not allowed for the {side}"):
                services.transfer(
                    source=source, target=target, amount=D("1"), actor=STAFF, idempotency_key=key
                )
    wallet.refresh_from_db()
    assert wallet.credit_balance == D("10")  # 10 − 1 + 1 when allowed, untouched when not
