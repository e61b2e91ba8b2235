"""Errors of the refill cards app. Messages say what to fix; the portal and the API
show them as they are."""

from __future__ import annotations

from datetime import datetime


class CardError(Exception):
    """Base class; nothing changed when one of these is raised."""

    status_code = 400


class RefillCardsDisabled(CardError):
    status_code = 403

    def __init__(self, message: str = "Refill cards are not enabled.") -> None:
        super().__init__(message)


class InvalidSeries(CardError):
    """A series parameter is wrong; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# The one answer to every code that cannot be redeemed (unknown, used, expired,
# disabled, another partner's, mistyped): the answer reveals nothing about the code.
REFUSED = (
    "This code cannot be redeemed. Check that you typed the whole code as printed on "
    "the card (dashes and spaces do not matter)."
)


class CardRefused(CardError):
    """The code cannot be redeemed. `reason` (a RedemptionAttempt.Outcome) is for
    staff and the log; customers and partner systems see only the message."""

    status_code = 422

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(REFUSED)
        self.reason = reason
        self.detail = detail


class RedemptionLocked(CardError):
    status_code = 429

    def __init__(self, until: datetime, message: str) -> None:
        super().__init__(message)
        self.until = until


class CardStateError(CardError):
    """Staff asked for something the card's state does not allow (delete a used card)."""

    status_code = 409


class IdempotencyConflict(CardError):
    status_code = 409
