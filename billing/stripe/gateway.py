"""The one place that talks to Stripe (the official ``stripe`` library).

Everything here is a thin, typed call: it takes and returns plain values
(dataclasses, ids, integer minor units) and turns the library's exceptions into
ours (``billing.errors``). It never touches the database; the services in
``billing.stripe.services`` decide what a result means for our records.

``STRIPE_API_BASE`` points the client at another server (localstripe in tests
and demos). Without ``STRIPE_API_KEY`` Stripe is off: ``stripe_enabled()`` is
False and every call raises ``StripeNotConfigured``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import stripe
from django.conf import settings

from billing.errors import (
    StripeCardDeclined,
    StripeNotConfigured,
    StripeRequestRejected,
    StripeUnavailable,
)
from billing.models import PaymentIntentState, PaymentMethodDetails, RefundResult, stripe_id_of


def stripe_enabled() -> bool:
    """Card payments are offered only when an API key is configured."""
    return bool(settings.STRIPE_API_KEY)


def _as_dict(obj: stripe.StripeObject) -> dict[str, Any]:
    # stripe 16 objects are not dicts (obj.get raises); work on plain data.
    return obj.to_dict(recursive=True)


@lru_cache(maxsize=4)
def _client_for(api_key: str, api_base: str, timeout: float, retries: int) -> stripe.StripeClient:
    base_addresses: Any = {"api": api_base} if api_base else None
    return stripe.StripeClient(
        api_key,
        base_addresses=base_addresses,
        max_network_retries=retries,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def _client() -> stripe.StripeClient:
    if not stripe_enabled():
        raise StripeNotConfigured()
    return _client_for(
        settings.STRIPE_API_KEY,
        settings.STRIPE_API_BASE,
        float(settings.STRIPE_TIMEOUT),
        int(settings.STRIPE_MAX_NETWORK_RETRIES),
    )


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """Sort Stripe's exceptions by what they mean for our records."""
    try:
        yield
    except stripe.CardError as exc:
        error = exc.error
        intent = getattr(error, "payment_intent", None) if error else None
        raise StripeCardDeclined(
            exc.user_message or str(exc._message or "The card was declined."),
            code=str(exc.code or ""),
            decline_code=str(getattr(error, "decline_code", None) or "") if error else "",
            payment_intent_id=stripe_id_of(intent),
        ) from exc
    except stripe.IdempotencyError as exc:
        # Same key, other parameters: the first request may well have gone through.
        raise StripeUnavailable(f"Stripe refused to replay the request: {exc._message}") from exc
    except stripe.InvalidRequestError as exc:
        raise StripeRequestRejected(
            f"Stripe refused the request: {exc._message}", code=str(exc.code or "")
        ) from exc
    except stripe.APIConnectionError as exc:
        raise StripeUnavailable(
            f"No answer from Stripe (timeout or network): {exc._message}"
        ) from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise StripeUnavailable(
            f"Stripe refused our API key (check STRIPE_API_KEY): {exc._message}"
        ) from exc
    except stripe.RateLimitError as exc:
        raise StripeUnavailable(f"Stripe asks us to slow down (429): {exc._message}") from exc
    except stripe.StripeError as exc:
        status = exc.http_status or "no status"
        raise StripeUnavailable(f"Stripe failed ({status}): {exc._message}") from exc


# --- customers ----------------------------------------------------------------


def create_customer(
    *, name: str, email: str, metadata: dict[str, str], idempotency_key: str
) -> str:
    with _translated_errors():
        customer = _client().v1.customers.create(
            params={"name": name, "email": email, "metadata": metadata},
            options={"idempotency_key": idempotency_key},
        )
    return customer.id


def customer_exists(*, stripe_customer_id: str) -> bool:
    """False when Stripe no longer knows the customer (deleted, or another account)."""
    try:
        with _translated_errors():
            customer = _client().v1.customers.retrieve(stripe_customer_id)
    except StripeRequestRejected:
        return False
    return not _as_dict(customer).get("deleted", False)


def update_customer(
    *, stripe_customer_id: str, name: str, email: str, metadata: dict[str, str]
) -> None:
    with _translated_errors():
        _client().v1.customers.update(
            stripe_customer_id, params={"name": name, "email": email, "metadata": metadata}
        )


def default_payment_method_id(*, stripe_customer_id: str) -> str:
    with _translated_errors():
        customer = _as_dict(_client().v1.customers.retrieve(stripe_customer_id))
    return stripe_id_of((customer.get("invoice_settings") or {}).get("default_payment_method"))


def set_default_payment_method(*, stripe_customer_id: str, payment_method_id: str) -> None:
    with _translated_errors():
        _client().v1.customers.update(
            stripe_customer_id,
            params={"invoice_settings": {"default_payment_method": payment_method_id}},
        )


# --- payment methods ----------------------------------------------------------


def attach_payment_method(
    *, stripe_customer_id: str, payment_method_id: str
) -> PaymentMethodDetails:
    with _translated_errors():
        method = _client().v1.payment_methods.attach(
            payment_method_id, params={"customer": stripe_customer_id}
        )
    return PaymentMethodDetails.from_stripe(_as_dict(method))


def detach_payment_method(*, payment_method_id: str) -> None:
    with _translated_errors():
        _client().v1.payment_methods.detach(payment_method_id)


def list_payment_methods(*, stripe_customer_id: str) -> list[PaymentMethodDetails]:
    with _translated_errors():
        methods = _client().v1.payment_methods.list(
            params={"customer": stripe_customer_id, "type": "card", "limit": 100}
        )
    return [PaymentMethodDetails.from_stripe(_as_dict(m)) for m in methods.data]


# --- payments -------------------------------------------------------------------


def charge_off_session(
    *,
    stripe_customer_id: str,
    payment_method_id: str,
    amount: int,
    currency: str,
    metadata: dict[str, str],
    idempotency_key: str,
) -> PaymentIntentState:
    """Create and confirm a PaymentIntent for a saved card, customer not present.

    The idempotency key comes from our own record, so a retry after a timeout or a
    5xx returns the first attempt's result instead of charging again.
    """
    with _translated_errors():
        intent = _client().v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": currency.lower(),
                "customer": stripe_customer_id,
                "payment_method": payment_method_id,
                "off_session": True,
                "confirm": True,
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )
    return PaymentIntentState.from_stripe(_as_dict(intent))


def retrieve_payment_intent(*, payment_intent_id: str) -> PaymentIntentState:
    with _translated_errors():
        intent = _client().v1.payment_intents.retrieve(
            payment_intent_id, params={"expand": ["latest_charge"]}
        )
    return PaymentIntentState.from_stripe(_as_dict(intent))


def cancel_payment_intent(*, payment_intent_id: str) -> PaymentIntentState:
    with _translated_errors():
        intent = _client().v1.payment_intents.cancel(payment_intent_id)
    return PaymentIntentState.from_stripe(_as_dict(intent))


def refund(*, payment_intent_id: str, amount: int, idempotency_key: str) -> RefundResult:
    with _translated_errors():
        result = _client().v1.refunds.create(
            params={"payment_intent": payment_intent_id, "amount": amount},
            options={"idempotency_key": idempotency_key},
        )
    return RefundResult(id=result.id, status=str(result.status), amount=int(result.amount))
