"""Refill card codes: how they are made, typed, checked, hashed and encrypted.

A code is the series prefix, 16 random characters from `secrets` (16 × 5 = 80
bits) and one check character, all from Crockford's base32 alphabet (digits and
letters without I, L, O, U, so nothing looks like anything else). People type
codes: input is normalised first (case, spaces, dashes; I and L read as 1, O as
0), and the check character (Luhn mod 32 over prefix and body) catches every
single mistyped character and every swap of two neighbours before any lookup.

At rest a card holds only
- `lookup_hash(code)`: HMAC-SHA256 keyed with `REFILL_CARD_LOOKUP_KEY`, under a
  unique index: redemption finds the card by it; without the key a dump cannot
  be searched for a guessed code;
- `encrypt(code)`: Fernet (AES-128-CBC + HMAC) with `REFILL_CARD_ENCRYPTION_KEYS`
  (the first encrypts, all decrypt: rotation), read back only by an export or a
  staff member with the "see full codes" permission.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
INDEX = {ch: i for i, ch in enumerate(ALPHABET)}
BODY_LENGTH = 16  # 80 bits
MAX_PREFIX = 8
# Longest text a person might send for a code (prefix, body, check, dashes, spaces).
MAX_INPUT = 64
# Typed look-alikes Crockford reads as digits.
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
_DROP = str.maketrans("", "", " -\t")
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET.encode())


class MalformedCode(ValueError):
    """Not a code at all (wrong characters, wrong length, wrong check character)."""


def check_character(text: str) -> str:
    """Luhn mod 32 over `text` (already normalised)."""
    factor, total = 2, 0
    for ch in reversed(text):
        addend = factor * INDEX[ch]
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return ALPHABET[(32 - total % 32) % 32]


def has_valid_check(text: str) -> bool:
    return len(text) > 1 and check_character(text[:-1]) == text[-1]


def validate_prefix(prefix: str) -> str:
    """The prefix as stored (upper case), or a MalformedCode that says what to fix."""
    clean = prefix.strip().upper()
    if len(clean) > MAX_PREFIX:
        raise MalformedCode(f"the prefix may have at most {MAX_PREFIX} characters.")
    bad = sorted({ch for ch in clean if ch not in INDEX})
    if bad:
        raise MalformedCode(
            "the prefix may use digits and the letters A–Z except I, L, O and U "
            f"(they look like other characters); not {' '.join(bad)!s}."
        )
    return clean


def new_code(prefix: str) -> str:
    """prefix + 16 random characters + check character (normalised form)."""
    # 10 random bytes are exactly 16 base32 characters; RFC 4648's alphabet mapped
    # onto Crockford's, in C.
    body = base64.b32encode(secrets.token_bytes(BODY_LENGTH * 5 // 8)).translate(_CROCKFORD)
    return prefix + body.decode() + check_character(prefix + body.decode())


def new_codes(prefix: str, count: int) -> list[str]:
    """`count` codes at once: one read of the system's random source for all of them
    (the per-call overhead of `secrets.token_bytes` was most of the time)."""
    size = BODY_LENGTH * 5 // 8
    pool = base64.b32encode(secrets.token_bytes(size * count)).translate(_CROCKFORD).decode()
    found = []
    for i in range(count):
        head = prefix + pool[i * BODY_LENGTH : (i + 1) * BODY_LENGTH]
        found.append(head + check_character(head))
    return found


def normalise(typed: str) -> str:
    """What a person typed → the normalised code, or MalformedCode. Case, spaces and
    dashes do not matter; I, L and O read as 1, 1 and 0. The check character must
    match: a typo is refused here, before any lookup."""
    if not isinstance(typed, str) or len(typed) > MAX_INPUT:
        raise MalformedCode("not a refill card code")
    text = typed.upper().translate(_DROP).translate(_READ_AS)
    if not BODY_LENGTH + 1 <= len(text) <= BODY_LENGTH + 1 + MAX_PREFIX:
        raise MalformedCode("not a refill card code")
    if any(ch not in INDEX for ch in text) or not has_valid_check(text):
        raise MalformedCode("not a refill card code")
    return text


def display(code: str, prefix: str) -> str:
    """ABC-7K3M-Q9XF-2HDP-WT4RZ: prefix, then the body in fours (the check joins
    the last group). Dashes are optional when typing."""
    rest = code[len(prefix) :]
    groups = [rest[i : i + 4] for i in range(0, BODY_LENGTH, 4)]
    groups[-1] += rest[BODY_LENGTH:]
    return "-".join(([prefix] if prefix else []) + groups)


def masked(prefix: str) -> str:
    """What staff without the permission see instead of a code."""
    hidden = "••••-••••-••••-•••••"
    return f"{prefix}-{hidden}" if prefix else hidden


# --- at rest ---------------------------------------------------------------------


@cache
def _lookup_key() -> bytes:
    return settings.REFILL_CARD_LOOKUP_KEY.encode()


def lookup_hash(code: str) -> bytes:
    """HMAC-SHA256 of the normalised code, keyed by REFILL_CARD_LOOKUP_KEY."""
    return hmac.new(_lookup_key(), code.encode(), hashlib.sha256).digest()


@cache
def _fernet() -> MultiFernet:
    keys = settings.REFILL_CARD_ENCRYPTION_KEYS
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(code: str) -> str:
    return _fernet().encrypt(code.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "this card's code cannot be decrypted with REFILL_CARD_ENCRYPTION_KEYS "
            "(was the key changed without keeping the old one?)"
        ) from None


def reset_keys() -> None:
    """For tests that change the key settings."""
    _lookup_key.cache_clear()
    _fernet.cache_clear()
