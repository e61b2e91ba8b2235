"""Balances, grants and transactions of a customer."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from ninja import Query, Status
from ninja.errors import HttpError
from ninja.pagination import paginate

from billing.api.auth import api_key_of, router
from billing.api.responses import (
    BALANCE_RESPONSES,
    GRANTS_RESPONSES,
    TRANSACTIONS_RESPONSES,
    documented,
)
from billing.api.schemas import (
    PAGE_SIZE_MAX,
    AccountNumberPath,
    GrantFilter,
    IdCursorPagination,
    WalletFilter,
)
from billing.models import (
    Customer,
)
from wallets.models import CreditGrant, GrantConsumption, LedgerTransaction, Wallet


def visible_customer(request: HttpRequest, account_number: str) -> Customer:
    """The customer, if it exists and this API key may see it; else 404."""
    key = api_key_of(request)
    customer = Customer.objects.filter(account_number=account_number).first()
    if customer is None or not key.may_see(customer):
        raise HttpError(404, f"no customer with account number {account_number!r}.")
    return customer


@router.get(
    "/customers/{account_number}/balance",
    operation_id="billing_api_get_balance",
    response=BALANCE_RESPONSES,
    openapi_extra=documented(BALANCE_RESPONSES),
    tags=["balances"],
    summary="A customer's balance and available funds",
)
def get_balance(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[WalletFilter]
) -> Any:
    """Credit (restricted and not), debt, credit limit and available funds of the
    customer's wallet in `currency` (default: the customer's currency). A customer
    without a wallet yet has zero everywhere."""
    customer = visible_customer(request, account_number)
    currency = filters.currency or customer.currency
    wallet = Wallet.objects.filter(customer=customer, currency=currency).first()
    if wallet is None:
        wallet = Wallet(customer=customer, currency=currency)
        pending = 0
    else:
        pending = wallet.grants.filter(status=CreditGrant.Status.PENDING).count()
    return Status(
        200,
        {
            "customer": customer.account_number,
            "currency": currency,
            "credit_balance": wallet.credit_balance,
            "restricted_balance": wallet.restricted_balance,
            "unrestricted_balance": wallet.unrestricted_balance,
            "debt": wallet.debt,
            "credit_limit": wallet.effective_credit_limit(),
            "permanent_credit_limit": wallet.credit_limit,
            "temporary_credit_increase": wallet.temporary_credit_increase,
            "temporary_increase_valid_until": wallet.temporary_increase_valid_until,
            "available_funds": wallet.available_funds(),
            "pending_grants": pending,
        },
    )


@router.get(
    "/customers/{account_number}/grants",
    operation_id="billing_api_get_grants",
    response=GRANTS_RESPONSES,
    openapi_extra=documented(GRANTS_RESPONSES),
    tags=["balances"],
    summary="A customer's credit grants, newest first",
)
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def get_grants(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[GrantFilter]
) -> QuerySet[CreditGrant]:
    """Every grant ("prepaid card") of the customer, newest first, with what is
    left, its expiry and its condition. Filter by `status` (pending = Requires
    Action) and `currency`. Paginated: follow `next` (`page_size` up to 200)."""
    customer = visible_customer(request, account_number)
    grants = CreditGrant.objects.filter(wallet__customer=customer).select_related("condition_item")
    if filters.status:
        grants = grants.filter(status=filters.status)
    if filters.currency:
        grants = grants.filter(currency=filters.currency)
    return grants


@router.get(
    "/customers/{account_number}/transactions",
    operation_id="billing_api_get_transactions",
    response=TRANSACTIONS_RESPONSES,
    openapi_extra=documented(TRANSACTIONS_RESPONSES),
    tags=["balances"],
    summary="A customer's ledger transactions, newest first",
)
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def get_transactions(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[WalletFilter]
) -> QuerySet[LedgerTransaction]:
    """The customer's wallet statement, newest first: usage, grants, activations,
    expiries, reversals, with the balance and debt right after each and the
    grants each drew from (+) or returned to (−). Paginated: follow `next`."""
    customer = visible_customer(request, account_number)
    transactions = LedgerTransaction.objects.filter(wallet__customer=customer).prefetch_related(
        Prefetch("lots", queryset=GrantConsumption.objects.order_by("id"))
    )
    if filters.currency:
        transactions = transactions.filter(currency=filters.currency)
    return transactions
