"""Who did it: a staff user, an API key, a scheduled job or an integration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    label: str
    user_id: int | None = None

    @classmethod
    def user(cls, user: Any) -> Actor:
        return cls(label=f"user:{user.get_username()}", user_id=user.pk)

    @classmethod
    def api_key(cls, key: Any) -> Actor:
        return cls(label=f"api-key:{key}")

    @classmethod
    def job(cls, name: str) -> Actor:
        return cls(label=f"job:{name}")

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(label=f"system:{name}")

    def __str__(self) -> str:
        return self.label
