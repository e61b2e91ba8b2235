"""Errors of the wallets app. Messages say what to fix; the API maps each class
to a 4xx status with the same message."""

from __future__ import annotations

from decimal import Decimal


class WalletError(Exception):
    """Base class; nothing was booked when one of these is raised."""

    status_code = 400


class InvalidAmount(WalletError):
    pass


class CurrencyMismatch(WalletError):
    pass


class WalletNotFound(WalletError):
    status_code = 404


class GrantNotFound(WalletError):
    status_code = 404


class InvalidGrantState(WalletError):
    status_code = 409


class NotReversible(WalletError):
    status_code = 409


class RefundNeedsConfirmation(WalletError):
    """A refund above the grant's unused credit would turn used credit into debt."""

    status_code = 409

    def __init__(self, message: str, *, unused: Decimal, debt: Decimal) -> None:
        super().__init__(message)
        self.unused = unused
        self.debt = debt


class TransferNotAllowed(WalletError):
    status_code = 403


class IdempotencyConflict(WalletError):
    """The same idempotency key was used before with different arguments."""

    status_code = 409


class InsufficientFunds(WalletError):
    status_code = 402

    def __init__(self, message: str, *, needed: Decimal, available: Decimal) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available
