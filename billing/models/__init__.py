"""Reference data, the bottom layer of the domain: it imports no other app of ours.

One module per concept; every name other modules use is re-exported here, so
``from billing.models import Customer`` is the one public path.
"""

from billing.models.api_keys import API_KEY_PREFIX, ApiKey, ApiKeyQuerySet, hash_api_secret
from billing.models.catalogue import (
    MAX_DIMENSION_INTEGER,
    MAX_DIMENSION_TEXT,
    MAX_DIMENSIONS,
    RATE_PLACES,
    Price,
    PriceQuerySet,
    ProductItem,
    clean_dimensions,
)
from billing.models.customers import (
    ACCOUNT_NUMBER_SEQUENCE,
    Customer,
    CustomerClass,
    Partner,
    PortalUser,
    currency_choices,
    next_account_number,
)
from billing.models.stripe import (
    PaymentIntentState,
    PaymentMethodDetails,
    RefundResult,
    StripeCharge,
    StripeChargeQuerySet,
    StripeEvent,
    StripePaymentMethod,
    stripe_id_of,
)
from billing.models.usage import UsageEvent

__all__ = [
    "ACCOUNT_NUMBER_SEQUENCE",
    "API_KEY_PREFIX",
    "MAX_DIMENSIONS",
    "MAX_DIMENSION_INTEGER",
    "MAX_DIMENSION_TEXT",
    "RATE_PLACES",
    "ApiKey",
    "ApiKeyQuerySet",
    "Customer",
    "CustomerClass",
    "Partner",
    "PaymentIntentState",
    "PaymentMethodDetails",
    "PortalUser",
    "Price",
    "PriceQuerySet",
    "ProductItem",
    "RefundResult",
    "StripeCharge",
    "StripeChargeQuerySet",
    "StripeEvent",
    "StripePaymentMethod",
    "UsageEvent",
    "clean_dimensions",
    "currency_choices",
    "hash_api_secret",
    "next_account_number",
    "stripe_id_of",
]
