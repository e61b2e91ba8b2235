"""Errors of prepaid subscriptions and automatic top-up: each message starts with the
field or object it is about and says what to do."""

from __future__ import annotations

from billing.errors import BillingError


class SubscriptionError(BillingError):
    """A subscription or auto top-up request that cannot be done; nothing changed."""

    status_code = 409
