"""Load test: a live ``kf serve`` (uvicorn, one worker, loopback) under 60 s of mixed traffic at concurrency 64.

Sets up the same throw-away deployment as ``bench/serve.py`` (SQLite catalog, the dSprites reference factor set
with random weights), warms it up with the same mix for a few seconds, then measures: requests, errors (any
non-2xx answer or failed connection), throughput, p50/p99 latency per kind and overall, and the server's resident
memory (RSS) after the warm-up and at the end (target: 0 errors, RSS growth < 10 %).

The mix, per request: 60 % ``POST /v1/predict`` (a random task subset; base64 .npy or nested-list inputs, batch
1-4), 10 % ``POST /v2/models/{name}/infer``, 10 % ``POST /v1/assemblies`` (a random subset of the 31), 10 %
``GET /v1/factor-sets``, 5 % ``GET /v2/models/{name}``, 5 % ``GET /v1/jobs``.

Run: ``.venv/bin/python bench/load.py [--seconds 60] [--concurrency 64]``. The last output line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import serve  # bench/serve.py: the deployment set-up and the raw HTTP/1.1 client

RSS_GROWTH_TARGET = 0.10


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def requests_mix(port: int, seed: int) -> list[tuple[str, bytes]]:
    """A pool of ready-to-send requests, by kind, drawn in the mix's proportions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tasks = list(serve.TASKS)
    subsets = [list(c) for r in range(1, 6) for c in itertools.combinations(tasks, r)]
    pool: list[tuple[str, bytes]] = []
    for i in range(400):
        subset = subsets[i % len(subsets)]
        x = (rng.random((1 + i % 4, 1, 64, 64)) > 0.9).astype(np.float32)
        if i % 2:
            buf = io.BytesIO()
            np.save(buf, x)
            inputs: Any = base64.b64encode(buf.getvalue()).decode()
        else:
            inputs = x.tolist()
        body = json.dumps({"factor_set": "bench", "tasks": subset, "inputs": inputs}).encode()
        pool += [("predict", serve._request("POST", port, "/v1/predict", body))] * 6
        infer = {
            "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": f"label_{t}"} for t in subset],
        }
        pool.append(("v2 infer", serve._request("POST", port, "/v2/models/bench/infer", json.dumps(infer).encode())))
        assemble = json.dumps({"factor_set": "bench", "tasks": subset}).encode()
        pool.append(("assemble", serve._request("POST", port, "/v1/assemblies", assemble)))
        pool.append(("catalog", serve._request("GET", port, "/v1/factor-sets")))
        pool.append(
            ("metadata" if i % 2 else "jobs", serve._request("GET", port, "/v2/models/bench" if i % 2 else "/v1/jobs"))
        )
    random.Random(seed).shuffle(pool)
    return pool


async def drive(port: int, pool: list[tuple[str, bytes]], concurrency: int, seconds: float) -> dict[str, Any]:
    stop = time.perf_counter() + seconds
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    samples: list[str] = []

    async def client(k: int) -> None:
        reader = writer = None
        i = k
        while time.perf_counter() < stop:
            kind, raw = pool[i % len(pool)]
            i += concurrency
            t = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                assert reader is not None
                status, body = await serve._read_response(reader)
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors[kind] = errors.get(kind, 0) + 1
                samples.append(f"{kind}: {type(exc).__name__}: {exc}")
                writer = None
                continue
            latencies.setdefault(kind, []).append(1000 * (time.perf_counter() - t))
            if not 200 <= status < 300:
                errors[kind] = errors.get(kind, 0) + 1
                if len(samples) < 10:
                    samples.append(f"{kind}: HTTP {status}: {body[:200]!r}")
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    wall = time.perf_counter() - started
    every = sorted(v for vs in latencies.values() for v in vs)
    return {
        "wall_s": wall,
        "requests": len(every) + sum(errors.get(k, 0) for k in errors if k not in latencies),
        "errors": sum(errors.values()),
        "error_samples": samples[:10],
        "rps": len(every) / wall,
        "p50_ms": serve.pct(every, 0.5),
        "p99_ms": serve.pct(every, 0.99),
        "by_kind": {
            k: {
                "requests": len(v),
                "errors": errors.get(k, 0),
                "p50_ms": serve.pct(v, 0.5),
                "p99_ms": serve.pct(v, 0.99),
            }
            for k, v in sorted(latencies.items())
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of the same mix before measuring")
    args = parser.parse_args()
    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(f"{cores} usable cores, load {load:.1f}")
    with tempfile.TemporaryDirectory(prefix="kf-bench-load-") as tmp:
        root = Path(tmp)
        run = serve.build_factor_set(root)
        env = {
            **os.environ,
            "KF_DATABASE_URL": f"sqlite:///{root}/catalog.db",
            "KF_ARTIFACT_DIR": str(root / "artifacts"),
            "KF_WORK_DIR": str(root / "work"),
            "KF_DEVICE": "cpu",
        }
        env.pop("KF_REDIS_URL", None)
        serve.register(env, run)
        port = serve.free_port()
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--log-level", "warning"]
        proc = serve.start(cmd, env, port, root / "kf.log", "/v2/health/ready")
        try:
            pool = requests_mix(port, seed=0)
            warm = asyncio.run(drive(port, pool, args.concurrency, args.warmup))
            rss_start = rss_bytes(proc.pid)
            print(
                f"warm-up {args.warmup:g} s: {warm['requests']} requests, {warm['errors']} errors; "
                f"server RSS {rss_start / 2**20:.1f} MiB"
            )
            result = asyncio.run(drive(port, pool, args.concurrency, args.seconds))
            rss_end = rss_bytes(proc.pid)
        finally:
            proc.terminate()
            proc.wait(15)
    growth = rss_end / rss_start - 1
    for kind, r in result["by_kind"].items():
        print(
            f"  {kind:10s} {r['requests']:7d} requests, {r['errors']} errors, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms"
        )
    for sample in result["error_samples"]:
        print(f"  error: {sample}")
    print(
        f"{args.seconds:g} s at concurrency {args.concurrency}: {result['requests']} requests, "
        f"{result['errors']} errors, {result['rps']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms; RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB "
        f"({100 * growth:+.1f} %, target < {100 * RSS_GROWTH_TARGET:.0f} %)"
    )
    summary = {
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "requests": result["requests"],
        "errors": result["errors"],
        "throughput_rps": round(result["rps"], 1),
        "p50_ms": round(result["p50_ms"], 2),
        "p99_ms": round(result["p99_ms"], 2),
        "rss_start_mib": round(rss_start / 2**20, 1),
        "rss_end_mib": round(rss_end / 2**20, 1),
        "rss_growth": round(growth, 4),
        "by_kind": {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in result["by_kind"].items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
