"""Benchmark: mixed task-subset traffic on one server, against single-subset traffic and the fused-graph runtime.

For each factor set (RANDOM weights: speed and memory do not depend on them) a throw-away embedded deployment
(SQLite catalog, local artifacts) and a real ``kf serve`` process (uvicorn, one worker), then real HTTP from a
load generator in this process (raw HTTP/1.1 keep-alive connections on asyncio), ``POST /v1/predict`` with
base64 ``.npy`` batch-1 inputs at concurrency 32:

- ``dsprites5``: the ``dsprites`` recipe's architecture (SimpleConv64+BN CKN, 5 tasks, 31 subsets);
- ``resnet18``: the same 5 tasks with a ResNet-18 CKN;
- ``tasks10``: the dsprites architecture with 10 tasks (1,023 subsets).

Traffic: ``one`` (always the same subset, as many tasks as a uniform draw holds on average: 3 of 5, 5 of 10,
so that both ask the same work per request), ``uniform`` (each request a subset drawn uniformly from
all of them) and ``zipf`` (subsets ranked at random, drawn with probability ~ 1/rank). Reported: throughput,
p50/p99, the server's RSS after each phase and its growth over the idle server, ratios against ``one`` in the
same run (targets: uniform >= 0.95x for dsprites5, >= 0.9x for resnet18; RSS growth with every subset served
<= 1.25x the growth for one), and for ``tasks10`` the first request of never-asked subsets against repeated
ones (p50, sequential; target within 1 ms) plus the server's composition and eviction counters (target 0).

Against the fused-graph runtime (``--baseline-rev``, default: the last commit that served predictions from one
fused ONNX session per subset, run from a ``git archive`` of that commit with this venv), on ``dsprites5`` in
the same run: single-subset throughput at concurrency 32, uniform-traffic throughput, and batch-1 p50 of both
servers against raw in-process ONNX Runtime on the fused graph (same thread settings) and the no-op endpoint.
The fused baseline is also the "merged session for a dominant subset" figure: a fused session serving one
subset, against the resident set's routed graph serving the same subset (the server gives no subset a session of
its own while this ratio stays at or above 1).

Each factor set runs ``--rounds`` rounds of the three traffic kinds in rotated order and reports each kind's median
round, with the server's CPU time per request (user + system of the server process, from /proc): a cost that
other processes on the machine inflate far less than they inflate wall-clock throughput.

Run: ``nice -n 5 .venv/bin/python bench/mixed.py [--seconds 8] [--rounds 3]``. The last output line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load_tools import cpu_seconds
from serve import _latencies, _once, _request, _throughput, free_port, pct, register, start, write_report

BASELINE_REV = "a05214c"  # serving code moved into service/serving/, predictions still from fused sessions
DSPRITES = {"shape": 3, "scale": 6, "orientation": 40, "pos_x": 32, "pos_y": 32}
TEN = {**DSPRITES, **{f"extra{i}": k for i, k in enumerate((4, 8, 10, 12, 16))}}
TARGETS = {"uniform_vs_one": {"dsprites5": 0.95, "resnet18": 0.9}, "rss_growth_ratio": 1.25, "first_ms": 1.0}


def build(root: Path, tasks: dict[str, int], ckn: str | None) -> Path:
    import torch

    from kf_core.export import export_factor_set
    from kf_core.factor import FactorConfig, FactorNet, NetSpec
    from kf_core.recipes import get_recipe
    from kf_core.tasks import TaskSpec

    torch.manual_seed(0)
    config = get_recipe("dsprites").factor
    if ckn is not None:
        config = FactorConfig(ckn=NetSpec(ckn), tsn=config.tsn, feature_dim=config.feature_dim)
    specs = [TaskSpec(n, n) for n in tasks]
    net = FactorNet(input_shape=(1, 64, 64), tasks=specs, num_classes=tasks, config=config)
    run = root / "run"
    export_factor_set(net.eval(), run / "parts", sample=torch.rand(4, 1, 64, 64))
    write_report(run, net, specs)
    return run


def deployment(root: Path, run: Path, name: str, tasks: dict[str, int]) -> dict[str, str]:
    env = {
        **os.environ,
        "KF_DATABASE_URL": f"sqlite:///{root}/catalog.db",
        "KF_ARTIFACT_DIR": str(root / "artifacts"),
        "KF_WORK_DIR": str(root / "work"),
        "KF_DEVICE": "cpu",
    }
    env.pop("KF_REDIS_URL", None)
    register(env, run, name=name, tasks=tasks)
    return env


def serve(env: dict[str, str], root: Path, tree: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    # -P: the working directory is not put on sys.path, so PYTHONPATH decides whose code runs.
    cmd = [sys.executable, "-P", "-m", "service.cli", "serve", "--port", str(port), "--log-level", "warning"]
    env = dict(env)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return start(cmd, env, port, root / f"kf-{port}.log", "/v2/health/ready"), port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def body(name: str, tasks: list[str], npy: str) -> bytes:
    return json.dumps({"factor_set": name, "tasks": tasks, "inputs": npy}).encode()


def one_subset(tasks: dict[str, int]) -> list[str]:
    """The single subset: as many tasks as a uniformly drawn subset holds on average (3 of 5, 5 of 10), so both
    kinds of traffic ask for the same work per request."""
    n = len(tasks)
    mean = sum(r * math.comb(n, r) for r in range(1, n + 1)) / (2**n - 1)
    return list(tasks)[: round(mean)]


def traffic(port: int, name: str, tasks: dict[str, int], npy: str, seed: int) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    subsets = [list(s) for r in range(1, len(tasks) + 1) for s in itertools.combinations(tasks, r)]
    ranked = rng.sample(subsets, len(subsets))
    zipf = rng.choices(ranked, weights=[1 / (i + 1) for i in range(len(ranked))], k=4096)
    uniform = [rng.choice(subsets) for _ in range(4096)]
    return {
        "one": [_request("POST", port, "/v1/predict", body(name, one_subset(tasks), npy))],
        "uniform": [_request("POST", port, "/v1/predict", body(name, s, npy)) for s in uniform],
        "zipf": [_request("POST", port, "/v1/predict", body(name, s, npy)) for s in zipf],
    }


def measure_set(
    label: str, name: str, tasks: dict[str, int], env: dict[str, str], root: Path, args: argparse.Namespace, npy: str
) -> dict[str, Any]:
    proc, port = serve(env, root)
    try:
        return asyncio.run(_measure_set(proc, port, label, name, tasks, args, npy))
    finally:
        proc.terminate()
        proc.wait(10)


async def _measure_set(
    proc: subprocess.Popen[bytes],
    port: int,
    label: str,
    name: str,
    tasks: dict[str, int],
    args: argparse.Namespace,
    npy: str,
) -> dict[str, Any]:
    plan = traffic(port, name, tasks, npy, seed=1)
    idle = rss_mib(proc.pid)
    out: dict[str, Any] = {"rss_idle_mib": round(idle, 1)}
    kinds = ("one", "uniform", "zipf")
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for round_ in range(args.rounds):
        for kind in kinds[round_ % 3 :] + kinds[: round_ % 3]:  # rotated: no kind always runs first
            await _throughput(port, plan[kind][:512], args.concurrency, 1.0)  # warm-up
            cpu = cpu_seconds(proc.pid)
            r = await _throughput(port, plan[kind], args.concurrency, args.seconds)
            r["cpu_ms_per_request"] = 1000 * (cpu_seconds(proc.pid) - cpu) / max(r["rps"] * r["wall_s"], 1)
            r["rss_mib"] = rss_mib(proc.pid)
            r["rss_growth_mib"] = r["rss_mib"] - idle
            runs[kind].append(r)
            print(
                f"{label:10s} {kind:8s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
                f"server CPU {r['cpu_ms_per_request']:.3f} ms/req  RSS {r['rss_mib']:7.1f} MiB "
                f"(+{r['rss_growth_mib']:.1f})  errors {r['errors']}"
            )
    for kind in kinds:  # the median round of each kind (by throughput); RSS after the last round
        ranked = sorted(runs[kind], key=lambda r: r["rps"])
        median = dict(ranked[len(ranked) // 2])
        median["rss_mib"], median["rss_growth_mib"] = runs[kind][-1]["rss_mib"], runs[kind][-1]["rss_growth_mib"]
        median["errors"] = sum(r["errors"] for r in runs[kind])
        out[kind] = {k: round(v, 3) for k, v in median.items()}
    out["cpu_per_request_uniform_vs_one"] = round(
        out["uniform"]["cpu_ms_per_request"] / out["one"]["cpu_ms_per_request"], 3
    )
    one = out["one"]
    out["uniform_vs_one"] = round(out["uniform"]["rps"] / one["rps"], 3)
    out["zipf_vs_one"] = round(out["zipf"]["rps"] / one["rps"], 3)
    growth_all = max(out["uniform"]["rss_growth_mib"], out["zipf"]["rss_growth_mib"])
    out["rss_growth_ratio"] = round(growth_all / max(one["rss_growth_mib"], 1.0), 3)
    if len(tasks) == 10:
        out |= await first_vs_repeated(port, name, tasks, npy)
    _, metrics = await _once("GET", port, "/metrics")
    text = metrics.decode()
    out["compositions"] = _metric(text, "kf_assembly_compositions_total")
    out["evictions"] = _metric(text, "kf_assembly_cache_evictions_total")
    runs, rows = _metric(text, "kf_ckn_runs_total"), _metric(text, "kf_ckn_rows_total")
    out["rows_per_ckn_run"] = round(rows / max(runs, 1), 2)
    print(
        f"{label:10s} uniform/one {out['uniform_vs_one']:.2f}  zipf/one {out['zipf_vs_one']:.2f}  (medians of "
        f"{args.rounds} rounds; server CPU per request uniform/one {out['cpu_per_request_uniform_vs_one']:.2f})  "
        "RSS growth "
        f"all/one {out['rss_growth_ratio']:.2f}  compositions {out['compositions']:.0f}  evictions "
        f"{out['evictions']:.0f}  rows per CKN run {out['rows_per_ckn_run']}"
    )
    return out


async def first_vs_repeated(port: int, name: str, tasks: dict[str, int], npy: str) -> dict[str, float]:
    """Sequential batch-1 requests: a subset never asked before, then the same subset again."""
    rng = random.Random(7)
    subsets = [list(s) for r in (3, 4, 5, 6) for s in itertools.combinations(tasks, r)]
    first, again = [], []
    for subset in rng.sample(subsets, 60):
        raw = _request("POST", port, "/v1/predict", body(name, subset, npy))
        first += await _latencies(port, raw, 1)
        again += await _latencies(port, raw, 1)
    f, a = pct(first, 0.5), pct(again, 0.5)
    print(f"tasks10    first request of a new subset p50 {f:.2f} ms, repeated {a:.2f} ms, difference {f - a:.2f} ms")
    return {"first_p50_ms": round(f, 3), "repeated_p50_ms": round(a, 3), "first_minus_repeated_ms": round(f - a, 3)}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def baseline_env(env: dict[str, str], root: Path, tree: Path) -> dict[str, str]:
    """The baseline's code refuses a catalog migrated past its own head: it serves a copy taken back there."""
    import shutil

    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from service.catalog.migrate import alembic_config

    copy = root / "catalog-baseline.db"
    shutil.copy(root / "catalog.db", copy)
    theirs = alembic_config()
    theirs.set_main_option("script_location", str(tree / "migrations"))
    head = ScriptDirectory.from_config(theirs).get_current_head()
    engine = create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, head or "base")
    engine.dispose()
    return {**env, "KF_DATABASE_URL": f"sqlite:///{copy}"}


def against_fused(
    env: dict[str, str], root: Path, tree: Path, args: argparse.Namespace, npy: str, x: Any
) -> dict[str, Any]:
    """Resident (this code) vs fused (the baseline tree) on the same deployment: both servers up, ``--rounds``
    rounds alternating which goes first, each figure the median round."""
    servers = {"fused": serve(baseline_env(env, root, tree), root, tree), "resident": serve(env, root)}
    try:
        rounds: dict[str, list[dict[str, float]]] = {"fused": [], "resident": []}
        for round_ in range(args.rounds):
            order = ["fused", "resident"] if round_ % 2 == 0 else ["resident", "fused"]
            for label in order:
                rounds[label].append(asyncio.run(_one_runtime(servers[label][1], label, args, npy, x)))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    out: dict[str, Any] = {}
    for label, runs in rounds.items():
        out[label] = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    out["resident_vs_fused_one"] = round(out["resident"]["one_rps"] / out["fused"]["one_rps"], 3)
    out["resident_vs_fused_uniform"] = round(out["resident"]["uniform_rps"] / out["fused"]["uniform_rps"], 3)
    for label in ("fused", "resident"):
        r = out[label]
        print(
            f"{label:8s} runtime (median of {args.rounds}): one subset {r['one_rps']:7.1f} req/s "
            f"({r['one_vs_noop']:.2f} of no-op), uniform {r['uniform_rps']:7.1f} req/s; batch 1 p50 "
            f"{r['batch1_p50_ms']:.2f} ms, overhead over raw ORT {r['overhead_p50_ms']:.2f} ms"
        )
    print(
        f"resident / fused: one subset {out['resident_vs_fused_one']:.2f}x (a fused session for a dominant subset "
        f"vs the routed graph), uniform {out['resident_vs_fused_uniform']:.2f}x"
    )
    return out


async def _one_runtime(port: int, label: str, args: argparse.Namespace, npy: str, x: Any) -> dict[str, float]:
    from kf_core import ort

    plan = traffic(port, "dsprites5", DSPRITES, npy, seed=1)
    _, probe = await _once("POST", port, "/v1/predict", body("dsprites5", ["shape"], npy))
    fused = json.loads(probe)["assembly_id"] is not None  # the fused runtime names the assembly it used
    assert fused == (label == "fused"), f"the {label} server runs the wrong code: {probe[:200]!r}"
    noop = await _throughput(port, _request("GET", port, "/v2/health/live"), args.concurrency, args.seconds)
    await _throughput(port, plan["one"], args.concurrency, 1.0)
    one = await _throughput(port, plan["one"], args.concurrency, args.seconds)
    await _throughput(port, plan["uniform"][:512], args.concurrency, 1.0)
    uniform = await _throughput(port, plan["uniform"], args.concurrency, args.seconds)
    assembly_body = json.dumps({"factor_set": "dsprites5", "tasks": one_subset(DSPRITES)}).encode()
    _, answer = await _once("POST", port, "/v1/assemblies", assembly_body)
    assembly = json.loads(answer)
    _, graph = await _once("GET", port, assembly["onnx_url"])
    session = ort.create_session(graph)
    names = [o["name"] for o in assembly["outputs"]]
    for _ in range(50):
        session.run(names, {"x": x})
    raw_ms = []
    for _ in range(args.requests):
        t = time.perf_counter()
        session.run(names, {"x": x})
        raw_ms.append(1000 * (time.perf_counter() - t))
    await _latencies(port, plan["one"][0], 50)
    http_ms = await _latencies(port, plan["one"][0], args.requests)
    r = {
        "one_rps": one["rps"],
        "uniform_rps": uniform["rps"],
        "noop_rps": noop["rps"],
        "one_vs_noop": one["rps"] / noop["rps"],
        "uniform_vs_one": uniform["rps"] / one["rps"],
        "batch1_p50_ms": pct(http_ms, 0.5),
        "raw_ort_p50_ms": pct(raw_ms, 0.5),
        "overhead_p50_ms": pct(http_ms, 0.5) - pct(raw_ms, 0.5),
        "errors": one["errors"] + uniform["errors"],
    }
    print(
        f"{label:8s} runtime: one subset {r['one_rps']:7.1f} req/s ({r['one_vs_noop']:.2f} of no-op "
        f"{r['noop_rps']:.0f}), uniform {r['uniform_rps']:7.1f} req/s ({r['uniform_vs_one']:.2f}x); batch 1 "
        f"p50 {r['batch1_p50_ms']:.2f} ms vs raw ORT {r['raw_ort_p50_ms']:.2f} ms (overhead "
        f"{r['overhead_p50_ms']:.2f} ms)"
    )
    return {k: round(v, 3) for k, v in r.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput run")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests for the latency runs")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one/uniform/zipf, order rotated; medians")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of the fused-graph runtime")
    parser.add_argument("--sets", default="dsprites5,resnet18,tasks10", help="which factor sets to run")
    args = parser.parse_args()

    import numpy as np

    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(f"{cores} usable cores, load {load:.1f}")
    if load > cores / 2:
        print(f"NOTE: other processes keep {load:.1f} cores busy; figures include waiting for a core")
    x = (np.random.default_rng(0).random((1, 1, 64, 64)) > 0.9).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, x)
    npy = base64.b64encode(buf.getvalue()).decode()
    sets = {"dsprites5": (DSPRITES, None), "resnet18": (DSPRITES, "resnet18"), "tasks10": (TEN, None)}
    result: dict[str, Any] = {"concurrency": args.concurrency, "seconds": args.seconds, "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="kf-bench-mixed-") as tmp:
        for label in args.sets.split(","):
            tasks, ckn = sets[label]
            root = Path(tmp) / label
            root.mkdir()
            env = deployment(root, build(root, tasks, ckn), label if label != "resnet18" else "resnet18set", tasks)
            name = label if label != "resnet18" else "resnet18set"
            result[label] = measure_set(label, name, tasks, env, root, args, npy)
            if label == "dsprites5" and args.baseline_rev:
                tree = Path(tmp) / "baseline"
                tree.mkdir()
                archive = subprocess.run(["git", "archive", args.baseline_rev], check=True, capture_output=True)
                subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
                result["vs_fused"] = against_fused(env, root, tree, args, npy, x)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
