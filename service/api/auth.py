"""API keys: ``Authorization: Bearer kf_<prefix>_<secret>``, stored as sha256 only, scoped ``predict`` or ``admin``.

    kf keys create --scope admin --name ops      # prints the key once; the catalog keeps its hash
    kf keys list | revoke PREFIX

Creating, listing and revoking keys are catalog writes (``service.catalog.keys``); this module checks requests.

Scopes: ``predict`` keys may predict and read everything; ``admin`` keys may also upload teachers and datasets,
submit or cancel jobs, change factor sets (aliases), delete rows and collect garbage. Health, readiness, server
metadata and ``/metrics`` stay open (load balancers and Prometheus call them). While the catalog holds no active
key the API is open to anyone who can reach it, which is why ``kf serve`` then binds 127.0.0.1 only and refuses
any other address unless ``KF_ALLOW_ANONYMOUS=true``.

Keys are random 256-bit secrets, so a plain sha256 is a sound hash (no brute force to slow down); comparisons are
constant-time (``hmac.compare_digest``), also when the prefix is unknown. Verified keys are remembered for
:data:`CACHE_TTL_S` seconds, so a revocation takes effect within that time on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.catalog.keys import has_active_keys, key_sha256
from service.catalog.models import ApiKey
from service.errors import ForbiddenError, UnauthorizedError

__all__ = ["CACHE_TTL_S", "Authenticator", "Principal", "required_scope"]

CACHE_TTL_S = 5.0
_KEY = re.compile(r"^kf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_OPEN = frozenset({"/v1/health", "/v2", "/v2/health/live", "/v2/health/ready", "/metrics"})
_ADMIN_PREFIXES = ("/v1/teachers", "/v1/datasets", "/v1/jobs", "/v1/factor-sets", "/v1/gc")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: an API key (its prefix and scope), or anonymous when no keys exist."""

    key_prefix: str | None
    scope: str  # "predict", "admin", or "anonymous" (full access while no key exists)


def required_scope(method: str, path: str) -> str | None:
    """The scope a route needs (``None``: open), from its method and path template. One rule for the whole API."""
    if path in _OPEN:
        return None
    if method.upper() not in ("GET", "HEAD", "OPTIONS") and path.startswith(_ADMIN_PREFIXES):
        return "admin"
    return "predict"


class Authenticator:
    """Checks requests against the catalog's keys, with a short-lived cache (no database hit per request)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._keys_exist: tuple[float, bool] = (0.0, False)
        self._verified: dict[str, tuple[float, Principal | None]] = {}

    async def authorize(self, request: Request) -> Principal:
        route = request.scope.get("route")
        scope = required_scope(request.method, getattr(route, "path", request.url.path))
        principal = await self.check(request.headers.get("authorization", ""), scope)
        if principal.key_prefix is not None:
            request.state.principal = principal
        return principal

    async def check(self, authorization: str, scope: str | None) -> Principal:
        """Who sends ``authorization`` (an ``Authorization`` header's value, HTTP or gRPC metadata), if the key
        may do what needs ``scope`` (``None``: open to all); else :class:`UnauthorizedError` or
        :class:`ForbiddenError`."""
        if scope is None:
            return Principal(None, "open")
        if not await self._any_keys():
            return Principal(None, "anonymous")
        kind, _, key = authorization.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise UnauthorizedError(
                "this API needs a key: send 'Authorization: Bearer <key>' (create one with `kf keys create`)"
            )
        principal = await self._verify(key.strip())
        if principal is None:
            raise UnauthorizedError("the API key is not valid (unknown, malformed or revoked); check it or create one")
        if scope == "admin" and principal.scope != "admin":
            raise ForbiddenError(
                f"this operation needs an admin key; key {principal.key_prefix} has scope {principal.scope!r}"
            )
        return principal

    async def _any_keys(self) -> bool:
        checked, value = self._keys_exist
        if time.monotonic() - checked < CACHE_TTL_S:
            return value
        value = await run_in_threadpool(self._query_any)
        self._keys_exist = (time.monotonic(), value)
        return value

    def _query_any(self) -> bool:
        with self._factory() as session:
            return has_active_keys(session=session)

    async def _verify(self, key: str) -> Principal | None:
        digest = key_sha256(key)
        hit = self._verified.get(digest)
        if hit is not None and time.monotonic() - hit[0] < CACHE_TTL_S:
            return hit[1]
        principal = await run_in_threadpool(self._lookup, key, digest)
        if len(self._verified) > 10_000:  # bounded: a flood of random keys cannot grow it without limit
            self._verified.clear()
        self._verified[digest] = (time.monotonic(), principal)
        return principal

    def _lookup(self, key: str, digest: str) -> Principal | None:
        match = _KEY.match(key)
        row = None
        if match:
            with self._factory() as session:
                row = session.scalar(select(ApiKey).where(ApiKey.prefix == match.group(1)))
        stored = row.key_sha256 if row is not None else _DUMMY_HASH
        valid = hmac.compare_digest(stored, digest)  # constant time, also for unknown prefixes
        if row is None or not valid or row.revoked_at is not None:
            return None
        return Principal(row.prefix, row.scope)
