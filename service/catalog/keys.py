"""API key rows: create (the plaintext is returned once, only its sha256 is stored), list, revoke.

The HTTP layer checks requests against these rows (``service.api.auth``); ``kf keys`` manages them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.catalog.db import utcnow
from service.catalog.models import ApiKey
from service.errors import NotFoundError

__all__ = ["SCOPES", "create_key", "has_active_keys", "key_sha256", "list_keys", "revoke_key"]

SCOPES = ("predict", "admin")


def key_sha256(key: str) -> str:
    """What the catalog stores of a key (keys are random 256-bit secrets, so a plain sha256 is a sound hash)."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(*, session: Session, scope: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key: the row (hash only) and the plaintext, which is shown once and never stored."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    prefix = secrets.token_hex(6)
    key = f"kf_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(name=name or f"{scope} key", prefix=prefix, key_sha256=key_sha256(key), scope=scope)
    session.add(row)
    session.flush()
    return row, key


def list_keys(*, session: Session) -> Sequence[ApiKey]:
    return session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()


def revoke_key(*, session: Session, prefix: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        raise NotFoundError("api key", prefix)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return row


def has_active_keys(*, session: Session) -> bool:
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None
