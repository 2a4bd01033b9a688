"""``GET /v1/whoami``: the scope of the key a request carries (the console hides what the key may not do)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.schemas import WhoAmI

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/whoami", response_model=WhoAmI, summary="The scope of this request's API key")
def whoami(request: Request) -> WhoAmI:
    principal = getattr(request.state, "principal", None)  # set by the authenticator when a key was checked
    if principal is None:
        return WhoAmI(scope="anonymous", key_prefix=None)
    return WhoAmI(scope=principal.scope, key_prefix=principal.key_prefix)
