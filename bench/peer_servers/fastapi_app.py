"""A plain FastAPI + ONNX Runtime endpoint, as one writes it by hand: a pydantic body of nested lists, one
``session.run`` per request in FastAPI's thread pool, no batching. ``uvicorn fastapi_app:app``."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI
from ortconf import OUTPUTS, make_session
from pydantic import BaseModel

app = FastAPI()
session = make_session()


class Body(BaseModel):
    x: list[Any]


@app.post("/predict")
def predict(body: Body) -> dict[str, list[Any]]:
    outputs = session.run(OUTPUTS, {"x": np.asarray(body.x, dtype=np.float32)})
    return {name: out.tolist() for name, out in zip(OUTPUTS, outputs, strict=True)}
