"""Errors of the billing app, each with a message a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


class BillingError(Exception):
    """Base class: the message says what happened and what to do about it."""


class StripeNotConfigured(BillingError):
    def __init__(self) -> None:
        super().__init__(
            "Stripe is not configured: set STRIPE_API_KEY to charge cards "
            "(without it, 'charge now' is not offered)."
        )


class StripeCardDeclined(BillingError):
    """Stripe answered: the card was declined. Nothing was charged; final for this charge."""

    def __init__(
        self, reason: str, *, code: str = "", payment_intent_id: str = "", decline_code: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = decline_code or code
        self.payment_intent_id = payment_intent_id


class StripeRequestRejected(BillingError):
    """Stripe refused the request as invalid (a 4xx other than a decline); nothing happened."""

    def __init__(self, reason: str, *, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class StripeUnavailable(BillingError):
    """No definite answer from Stripe (timeout, network, 5xx, rate limit, key refused).

    The request may or may not have been carried out: keep the record pending and
    retry with the same idempotency key.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoPaymentMethod(BillingError):
    pass


class ChargeNotRetryable(BillingError):
    pass


class ChargeNotRefundable(BillingError):
    pass


class WebhookRejected(BillingError):
    """A webhook delivery we do not accept (bad or old signature, not an event); nothing is stored."""


class StripeMismatch(BillingError):
    """What Stripe reports does not fit our record (other intent, amount or currency)."""


# --- usage ---------------------------------------------------------------------------


class UsageError(BillingError):
    """A usage event (or its reversal) was not booked; nothing was written to the
    ledger. `status_code` is the HTTP status the API answers with."""

    status_code = 400


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field of a usage event."""

    field: str
    message: str


class UsageRejected(UsageError):
    """Bad input: each problem names the field and says what to fix."""

    status_code = 422

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class UsageRefused(UsageError):
    """The wallet cannot pay for the event (the ledger's InsufficientFunds message)."""

    status_code = 402

    def __init__(self, message: str, *, needed: Decimal, available: Decimal) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


class UsageConflict(UsageError):
    """The event id was already used for a different event of the same customer."""

    status_code = 409


class ApiKeyNotUsable(UsageError):
    """The API key was revoked (or removed) since this process last read it: 401,
    nothing booked."""

    status_code = 401


class UsageNotFound(UsageError):
    status_code = 404


class UsageNotReversible(UsageError):
    status_code = 409
