"""The verified identity that crosses from the identity phase to the decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    issuer: str
    subject: str
    username: str | None
    email: str | None
    audiences: tuple[str, ...]
    groups: tuple[str, ...]
    scopes: tuple[str, ...]
    client_id: str | None
    acr: str | None
    auth_time: int | None
    jti: str | None
    issued_at: float | None
    expires_at: float
    claims: Mapping[str, Any]
