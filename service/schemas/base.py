"""What every API schema shares: the strict request base (unknown fields refused), the response base (read from
ORM rows), the error body, names."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class ClientModel(BaseModel):
    """What clients send: an unknown field is refused (a typo in an option is a 422 naming it)."""

    model_config = ConfigDict(extra="forbid")


# Constraints stated in the OpenAPI document that the server checks itself, with a message that says more than
# JSON Schema's would (the list of known tasks, "the batch has no samples"): the document says what is accepted,
# the server says what to fix. An empty list also stands for an array read straight into numpy (fast path).
NON_EMPTY: dict[str, Any] = {"minItems": 1}


def present(field: str) -> dict[str, Any]:
    """JSON Schema: ``field`` is present and not null."""
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


class ServerModel(BaseModel):
    """What the API answers, read from ORM rows as well as from dicts."""

    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    """Every error response: what went wrong and what to do, and the error's class name."""

    detail: str
    error: str
