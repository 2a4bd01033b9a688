"""BentoML's way: a service class with a batchable API (adaptive batching over the first dimension), numpy in and
out (one array: the requested outputs side by side). ``bentoml serve bentoml_service:Graph``. No access log (KF
writes none either)."""

from __future__ import annotations

import bentoml
import numpy as np
from ortconf import MAX_BATCH, OUTPUTS, make_session


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Graph:
    def __init__(self) -> None:
        self.session = make_session()

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=60_000)
    def predict(self, x: np.ndarray) -> np.ndarray:
        outputs = self.session.run(OUTPUTS, {"x": x.astype(np.float32, copy=False)})
        return np.concatenate(outputs, axis=1)
