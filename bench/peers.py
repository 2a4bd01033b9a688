"""Benchmark: the KF service against the servers a user would pick instead, serving the same assembled graph.

Sets up a throw-away KF deployment with the dSprites reference factor set (random weights: speed does not depend
on them; see ``bench/serve.py``), assembles all five tasks, downloads that one ONNX graph and serves it with:

- KF itself (``kf serve``, one process, ``KF_GRPC_PORT`` on): ``/v1/predict`` (nested lists), v2 JSON (flat
  ``data``), v2 with the binary tensor extension, and v2 over gRPC (``raw_input_contents``);
- BentoML (a service with a batchable API: adaptive batching), MLServer (a custom ``MLModel`` runtime with
  adaptive batching), Ray Serve (one replica, ``@serve.batch``) and a plain FastAPI + ONNX Runtime endpoint
  (no batching, as written by hand): see ``bench/peer_servers/``. Each is one server (one worker/replica; Ray
  also runs its own GCS, raylet and HTTP proxy processes), installed by this script into its own virtual
  environment under ``--venvs`` (default ``~/.cache/kf-bench/peers/NAME``, kept between runs; from PyPI).

Every server runs the graph with the same ONNX Runtime settings (``bench/peer_servers/ortconf.py``, as KF's:
all graph optimisations, sequential execution, one intra-op thread per usable core, one inter-op thread, workers
spinning within a run and sleeping between runs (``--spin 0``: sleeping whenever idle, ``KF_INFER_SPIN=0``); the
same onnxruntime release as this environment's), the same largest batch (64) and the shortest
batching wait each allows: KF 0 (its CPU default), Ray 0, MLServer 0.5 ms (it batches only with a positive
wait), BentoML its adaptive dispatcher (which sets the wait itself; ``max_latency_ms`` left at its default).
No server writes an access log (KF writes none). Every request is one image (batch 1) and asks for the five
tasks' probabilities; every answer is checked against ONNX Runtime in this process before measuring.

Measured with C load generators (``apt-get install -y wrk nghttp2-client``): batch-1 latency one request at a
time (``wrk -c1 --latency``; gRPC with a Python client) against ``session.run`` in process, and throughput at
concurrency 32 (``wrk -c32``; gRPC ``h2load -c32 -m1``). Rounds rotate the order; each figure is the median over
rounds. A peer runs only for its own turn in a round (started, checked against ONNX Runtime on its first start,
measured, stopped), so no server is measured beside another system's processes; KF's server runs throughout and
sits idle during the peers' turns. The client shares the machine's cores with the servers; run on a quiet machine.
Each throughput run also reads the CPU time it cost, per request answered: the server's (its process and every
process under it, from /proc; for KF also its event loop thread's share) and the load generator's (wrk or h2load,
from this process's finished children): on a machine whose cores are all busy, throughput is what CPU per request
allows, and these say where an endpoint spends more.
Run: ``.venv/bin/python bench/peers.py [--venvs DIR] [--seconds 10] [--rounds 3] [--peers fastapi,bentoml,...]
[--keep DIR]``.
The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "peer_servers"
sys.path[:0] = [str(HERE), str(SERVERS)]

import load_tools  # noqa: E402
import serve as kf_bench  # noqa: E402
from peer_targets import PEERS, Target, kf_targets, peer_target  # noqa: E402

NOOP_TARGET, PEER_TARGET, ORT_GAP_MS, GRPC_TARGET = 0.6, 2.0, 0.5, 1.0
_CPU_KEYS = ("server_cpu_us", "main_thread_cpu_us", "client_cpu_us")  # per request, from load_tools.throughput
MAX_BATCH = 64  # every server's largest batch (KF's default KF_MAX_BATCH too)


def ensure_venv(root: Path, name: str, packages: list[str]) -> Path:
    """``root/name``, a virtual environment of its own holding ``packages`` (installed once: a marker records
    what is there; a changed list installs into the same environment, so only what differs is fetched)."""
    venv = root / name
    marker = venv / ".kf-peer-packages"
    spec = "\n".join(packages)
    if marker.exists() and marker.read_text() == spec:
        return venv
    print(f"installing {name} into {venv}: {' '.join(packages)}", flush=True)
    started = time.monotonic()
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # on the base interpreter, bare
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", *packages], check=True)
    marker.write_text(spec)
    print(f"installed {name} in {time.monotonic() - started:.0f} s", flush=True)
    return venv


def versions(venv: Path, packages: list[str]) -> str:
    """``name version`` of ``packages`` as installed in ``venv`` (what the figures were measured with)."""
    names = [re.split(r"[\[<>=!~ ]", p, maxsplit=1)[0] for p in packages]
    code = "import importlib.metadata as m, sys; print(', '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))"
    return subprocess.run(
        [venv / "bin" / "python", "-c", code, *names], capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "kf-bench" / "peers")
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput run")
    parser.add_argument("--latency-seconds", type=float, default=4.0, help="each sequential batch-1 run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keep", type=Path, help="work in this (new) directory and keep it: graph, server logs")
    parser.add_argument(
        "--spin", type=int, choices=(0, 1), default=1, help="KF_INFER_SPIN of KF and the same for every peer"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {','.join(PEERS)}")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")
    load_tools.require("wrk", "h2load")

    import onnxruntime as ort

    threads = len(os.sched_getaffinity(0))
    cores, load = threads, os.getloadavg()[0]
    print(f"{cores} usable cores, load {load:.1f}; onnxruntime {ort.__version__} everywhere")
    print(
        f"ONNX Runtime settings of every server (KF_INFER_THREADS={threads}; bench/peer_servers/ortconf.py): "
        f"ORT_ENABLE_ALL, sequential execution, {threads} intra-op threads, 1 inter-op thread, "
        f"{'workers spinning within a run' if args.spin else 'no spinning'} (KF_INFER_SPIN={args.spin}); "
        f"CPU provider; largest batch {MAX_BATCH}"
    )
    if load > cores / 2:
        print(f"NOTE: other processes keep {load:.1f} cores busy; figures include waiting for a core")
    venvs = {}
    for name in peers:
        packages = [*PEERS[name]["packages"], f"onnxruntime=={ort.__version__}"]
        venvs[name] = ensure_venv(args.venvs, name, packages)
        print(f"{name}: {versions(venvs[name], packages)} ({venvs[name]})", flush=True)
    if args.keep:
        if args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep}: not empty; name a new directory")
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.keep.resolve(), args, threads, peers, venvs)
    else:
        with tempfile.TemporaryDirectory(prefix="kf-bench-peers-") as tmp:
            result = run(Path(tmp), args, threads, peers, venvs)
    print(json.dumps(result))


def run(root: Path, args: argparse.Namespace, threads: int, peers: list[str], venvs: dict[str, Path]) -> dict[str, Any]:
    run_dir = kf_bench.build_factor_set(root)
    kf_port, grpc_port = kf_bench.free_port(), kf_bench.free_port()
    env = {
        **os.environ,
        "KF_DATABASE_URL": f"sqlite:///{root}/catalog.db",
        "KF_ARTIFACT_DIR": str(root / "artifacts"),
        "KF_WORK_DIR": str(root / "work"),
        "KF_DEVICE": "cpu",
        "KF_INFER_THREADS": str(threads),
        "KF_INFER_SPIN": str(args.spin),
        "KF_MAX_BATCH": str(MAX_BATCH),
        "KF_BATCH_WAIT_MS": "0",  # KF's CPU default, stated: the peers batch with their shortest waits too
        "KF_GRPC_PORT": str(grpc_port),
    }
    env.pop("KF_REDIS_URL", None)
    kf_bench.register(env, run_dir)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            kf_bench.start(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(kf_port), "--log-level", "warning"],
                env,
                kf_port,
                root / "kf.log",
                "/v2/health/ready",
            )
        )
        graph, tasks = load_tools.download_graph(kf_port, root / "graph.onnx")
        outputs = [f"probs_{t}" for t in tasks]
        os.environ.update(
            PEER_GRAPH=str(graph), PEER_OUTPUTS=",".join(outputs), PEER_THREADS=str(threads), PEER_SPIN=str(args.spin)
        )
        from ortconf import make_session

        session = make_session(str(graph), threads)
        x = (np.random.default_rng(0).random((1, 1, 64, 64)) > 0.9).astype(np.float32)
        want = session.run(outputs, {"x": x})
        targets = kf_targets(kf_port, grpc_port, x, tasks)
        peer_env = {**env, **{k: os.environ[k] for k in ("PEER_GRAPH", "PEER_OUTPUTS", "PEER_THREADS", "PEER_SPIN")}}
        peer_env["PEER_MAX_BATCH"] = str(MAX_BATCH)
        peer_env["PYTHONPATH"] = str(SERVERS)
        peer_env.update(BENTOML_DO_NOT_TRACK="True", RAY_USAGE_STATS_ENABLED="0")  # no phoning home mid-run
        for t in targets:
            load_tools.check_outputs(t, want)
        launchers = {}
        for name in peers:  # each started for its own turn only: Ray, for one, runs daemons beside its replica
            target = peer_target(name, kf_bench.free_port(), x, outputs)
            launchers[target.name] = _launcher(name, venvs[name], peer_env, root, target, want)
            targets.append(target)
        print(f"answers of KF's {len(targets) - len(peers)} endpoints match in-process ONNX Runtime", flush=True)
        return measure(args, targets, session, outputs, x, kf_port, procs[0].pid, launchers)
    finally:
        for p in reversed(procs):
            load_tools.stop(p)


def _launcher(name: str, venv: Path, env: dict[str, str], root: Path, target: Target, want: list[np.ndarray]) -> Any:
    """Starts the peer behind ``target`` and returns its process; the first start checks its answers."""
    checked = False

    def launch() -> Any:
        nonlocal checked
        proc = load_tools.start_peer(name, venv, target.port, env, root, target)
        if not checked:
            try:
                load_tools.check_outputs(target, want)
            except BaseException:
                load_tools.stop(proc)
                raise
            print(f"{name}: answers match in-process ONNX Runtime (atol 1e-5)", flush=True)
            checked = True
        return proc

    return launch


def measure(
    args: argparse.Namespace,
    targets: list[Target],
    session: Any,
    outputs: list[str],
    x: np.ndarray,
    kf_port: int,
    kf_pid: int,
    launchers: dict[str, Any],
) -> dict[str, Any]:
    """Rounds over every endpoint in rotated order; a peer runs only during its own turn (``launchers``: started
    before its measurements, stopped after), so no server is measured beside another system's processes. Each
    throughput run also gives the CPU time per request of the server (``kf_pid``, or the peer's process tree) and
    of the load generator."""
    noop = Target("KF no-op (GET /v2/health/live)", kf_port, "/v2/health/live", b"", {}, None, method="GET")
    every = [noop, *targets]
    rps: dict[str, list[float]] = {t.name: [] for t in every}
    p50: dict[str, list[float]] = {t.name: [] for t in every if t is not noop}
    p99: dict[str, list[float]] = {t.name: [] for t in every if t is not noop}
    cpu: dict[str, dict[str, list[float]]] = {t.name: {k: [] for k in _CPU_KEYS} for t in every}
    ort_p50, ort_p99, errors = [], [], 0
    for r in range(args.rounds):
        times = load_tools.in_process(session, outputs, x, seconds=args.latency_seconds)
        ort_p50.append(times[0])
        ort_p99.append(times[1])
        order = every[r % len(every) :] + every[: r % len(every)]
        for t in order:
            proc = launchers[t.name]() if t.name in launchers else None
            try:
                if t is not noop:
                    lat = load_tools.sequential(t, args.latency_seconds)
                    p50[t.name].append(lat["p50_ms"])
                    p99[t.name].append(lat["p99_ms"])
                    errors += lat["errors"]
                got = load_tools.throughput(
                    t, args.concurrency, args.seconds, server_pid=proc.pid if proc is not None else kf_pid
                )
                rps[t.name].append(got["rps"])
                for k in _CPU_KEYS:
                    if k in got:
                        cpu[t.name][k].append(got[k])
                errors += got["errors"]
            finally:
                if proc is not None:
                    load_tools.stop(proc)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in rps.items()}
    lat50 = {k: statistics.median(v) for k, v in p50.items()}
    lat99 = {k: statistics.median(v) for k, v in p99.items()}
    ort50, ort99 = statistics.median(ort_p50), statistics.median(ort_p99)
    cpu_us = {n: {k: statistics.median(v) for k, v in by.items() if v} for n, by in cpu.items()}
    errors += load_tools.grpc_failures(kf_port)
    return report(args, targets, noop.name, med, lat50, lat99, ort50, ort99, cpu_us, errors)


def report(
    args: argparse.Namespace,
    targets: list[Target],
    noop: str,
    rps: dict[str, float],
    p50: dict[str, float],
    p99: dict[str, float],
    ort50: float,
    ort99: float,
    cpu: dict[str, dict[str, float]],
    errors: int,
) -> dict[str, Any]:
    kf = {t.key: t.name for t in targets if t.key.startswith("kf_")}
    peers = {t.key: t.name for t in targets if not t.key.startswith("kf_")}
    v2 = rps[kf["kf_v2_json"]]
    print(
        f"\n| server, endpoint | batch-1 p50 ms | p99 ms | req/s at c={args.concurrency} | KF v2 JSON / this "
        "| server CPU us/req (KF: event loop) | load generator CPU us/req |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| ONNX Runtime in process (session.run) | {ort50:.2f} | {ort99:.2f} | | | | |")
    print(f"| {noop} | | | {rps[noop]:.0f} | {_ratio(v2, rps[noop]):.2f} | {_cpu_cells(cpu[noop], True)} |")
    for t in targets:
        n = t.name
        cells = _cpu_cells(cpu[n], t.key.startswith("kf_"))
        print(f"| {n} | {p50[n]:.2f} | {p99[n]:.2f} | {rps[n]:.0f} | {_ratio(v2, rps[n]):.2f} | {cells} |")
    fastapi = peers.get("fastapi")
    checks = {
        "v2_json_vs_noop": (_ratio(v2, rps[noop]), NOOP_TARGET),
        **{f"v2_json_vs_{k}": (_ratio(v2, rps[n]), PEER_TARGET) for k, n in peers.items()},
        "grpc_vs_v2_binary": (_ratio(rps[kf["kf_grpc"]], rps[kf["kf_v2_binary"]]), GRPC_TARGET),
    }
    gap = p50[kf["kf_v2_json"]] - ort50
    print(
        f"\nKF v2 JSON / no-op {checks['v2_json_vs_noop'][0]:.2f} (target >= {NOOP_TARGET}); / every peer: "
        + ", ".join(f"{k} {checks[f'v2_json_vs_{k}'][0]:.2f}x" for k in peers)
        + f" (target >= {PEER_TARGET}x); gRPC / v2 binary {checks['grpc_vs_v2_binary'][0]:.2f} (target >= 1)"
    )
    grpc, binary = cpu[kf["kf_grpc"]], cpu[kf["kf_v2_binary"]]
    if "server_cpu_us" in grpc and "server_cpu_us" in binary:
        g, b = grpc["server_cpu_us"], binary["server_cpu_us"]
        gl, bl = grpc["main_thread_cpu_us"], binary["main_thread_cpu_us"]
        print(
            f"CPU per request, gRPC against v2 binary: KF's server {g:.0f} against {b:.0f} us ({_ratio(g, b):.2f}x; "
            f"event loop {gl:.0f} against {bl:.0f}, its other threads {g - gl:.0f} against {b - bl:.0f}); load "
            f"generator (h2load, wrk) {grpc.get('client_cpu_us', float('nan')):.0f} against "
            f"{binary.get('client_cpu_us', float('nan')):.0f} us"
        )
    print(
        f"batch 1 p50: KF v2 JSON {p50[kf['kf_v2_json']]:.2f} ms, in-process ORT {ort50:.2f} ms (gap {gap:.2f} ms, "
        f"target <= {ORT_GAP_MS})"
        + (f", plain FastAPI {p50[fastapi]:.2f} ms (target: KF <= it)" if fastapi else "")
        + f"; errors {errors}"
    )
    return {
        "rps": {t.key: round(rps[t.name], 1) for t in targets} | {"kf_noop": round(rps[noop], 1)},
        "p50_ms": {t.key: round(p50[t.name], 3) for t in targets} | {"ort_in_process": round(ort50, 3)},
        "p99_ms": {t.key: round(p99[t.name], 3) for t in targets} | {"ort_in_process": round(ort99, 3)},
        "cpu_us_per_request": {t.key: _cpu_json(cpu[t.name]) for t in targets} | {"kf_noop": _cpu_json(cpu[noop])},
        "ratios": {k: round(v, 3) for k, (v, _) in checks.items()},
        "targets": {k: t for k, (_, t) in checks.items()} | {"p50_gap_to_ort_ms": ORT_GAP_MS},
        "p50_gap_to_ort_ms": round(gap, 3),
        "kf_p50_vs_fastapi": round(p50[kf["kf_v2_json"]] / p50[fastapi], 3) if fastapi else None,
        "met": errors == 0
        and all(v >= t for v, t in checks.values())
        and gap <= ORT_GAP_MS
        and (fastapi is None or p50[kf["kf_v2_json"]] <= p50[fastapi]),
        "errors": errors,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
    }


def _cpu_cells(cpu: dict[str, float], kf: bool) -> str:
    """The two CPU cells of a table row: the server's CPU per request (KF's: with its event loop's share) and the
    load generator's."""
    server = f"{cpu['server_cpu_us']:,.0f}" if "server_cpu_us" in cpu else ""
    if kf and "main_thread_cpu_us" in cpu:
        server += f" ({cpu['main_thread_cpu_us']:,.0f})"
    client = f"{cpu['client_cpu_us']:,.0f}" if "client_cpu_us" in cpu else ""
    return f"{server} | {client}"


def _cpu_json(cpu: dict[str, float]) -> dict[str, float]:
    return {k.removesuffix("_cpu_us"): round(v, 1) for k, v in cpu.items()}


def _ratio(a: float, b: float) -> float:
    """a / b; infinite when b is 0 (a server that completed nothing: reported as an error too)."""
    return a / b if b else float("inf")


if __name__ == "__main__":
    main()
