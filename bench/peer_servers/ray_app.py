"""Ray Serve's way: one deployment replica whose ``@serve.batch`` method runs the session over the requests that
queued up together. ``python ray_app.py PORT`` starts Ray, Serve's HTTP proxy on PORT and the replica. No access
log (KF writes none either)."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import ray
from ortconf import MAX_BATCH, OUTPUTS, make_session
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
class Graph:
    def __init__(self) -> None:
        self.session = make_session()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.0)
    async def run(self, xs: list[np.ndarray]) -> list[dict[str, Any]]:
        outputs = self.session.run(OUTPUTS, {"x": np.concatenate(xs)})
        answers, start = [], 0
        for x in xs:
            answers.append({n: o[start : start + len(x)].tolist() for n, o in zip(OUTPUTS, outputs, strict=True)})
            start += len(x)
        return answers

    async def __call__(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        return await self.run(np.asarray(body["x"], dtype=np.float32))


if __name__ == "__main__":
    ray.init(include_dashboard=False, log_to_driver=False)
    quiet = {"enable_access_log": False}
    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])}, logging_config=quiet)
    serve.run(Graph.bind(), route_prefix="/predict", logging_config=quiet)
    while True:
        time.sleep(3600)
