"""Brute-force guard for redemption: failed attempts counted atomically in the
shared cache (Redis), per customer and per client address.

REFILL_CARD_CUSTOMER_FAILURES failures within REFILL_CARD_CUSTOMER_WINDOW_MINUTES
lock the customer, and REFILL_CARD_ADDRESS_FAILURES_PER_MINUTE failures within a
minute lock the address, for REFILL_CARD_LOCKOUT_MINUTES; while locked, every code
(a valid one too) is refused. A counter is a Redis key created with its window as
time to live (`add`) and raised with INCR, so two processes never lose a count.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from refillcards.errors import RedemptionLocked


def _keys(customer_id: int | None, client_ip: str | None) -> list[tuple[str, str, int, int]]:
    """(counter key, lock key, limit, window seconds) per thing counted."""
    found = []
    ns = settings.REFILL_CARD_CACHE_NAMESPACE
    if customer_id is not None:
        found.append((
            f"{ns}:fail:customer:{customer_id}", f"{ns}:lock:customer:{customer_id}",
            settings.REFILL_CARD_CUSTOMER_FAILURES,
            settings.REFILL_CARD_CUSTOMER_WINDOW_MINUTES * 60,
        ))  # fmt: skip
    if client_ip:
        found.append((
            f"{ns}:fail:ip:{client_ip}", f"{ns}:lock:ip:{client_ip}",
            settings.REFILL_CARD_ADDRESS_FAILURES_PER_MINUTE, 60,
        ))  # fmt: skip
    return found


def lock_message(until: datetime) -> str:
    # rounded up to the minute: "until 10:16" stays true for a lock ending 10:15:20
    shown = until.replace(second=0, microsecond=0) + timedelta(minutes=1)
    local = timezone.localtime(shown)
    return (
        "Too many codes that could not be redeemed. Redeeming is paused for your account "
        f"or your address until {local:%H:%M} {local.tzname()}; every code is refused until "
        "then, so wait and try again."
    )


def check(*, customer_id: int | None, client_ip: str | None) -> None:
    """Raise RedemptionLocked while the customer or the address is locked."""
    keys = _keys(customer_id, client_ip)
    locks = cache.get_many([lock for _, lock, _, _ in keys])
    if locks:
        until = max(datetime.fromisoformat(value) for value in locks.values())
        raise RedemptionLocked(until, lock_message(until))


def _incr(key: str, window: int) -> int:
    for _ in range(3):
        cache.add(key, 0, timeout=window)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            continue
    return 1


def count_failure(*, customer_id: int | None, client_ip: str | None) -> bool:
    """Count one failure; True if it started a lockout."""
    locked = False
    minutes = settings.REFILL_CARD_LOCKOUT_MINUTES
    for counter, lock, limit, window in _keys(customer_id, client_ip):
        if _incr(counter, window) >= limit:
            until = timezone.now() + timedelta(minutes=minutes)
            if cache.add(lock, until.isoformat(), timeout=minutes * 60):
                cache.delete(counter)
                locked = True
    return locked


def clear(*, customer_id: int | None = None, client_ip: str | None = None) -> None:
    """Unlock (staff, tests)."""
    for counter, lock, _, _ in _keys(customer_id, client_ip):
        cache.delete_many([counter, lock])
