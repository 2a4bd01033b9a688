"""Load generation and server plumbing of ``bench/peers.py``: wrk (HTTP/1.1) and h2load (gRPC over HTTP/2) runs,
their parsed figures, the peers' processes, and the check of every endpoint's answers against in-process ORT."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from peer_targets import Target

SERVERS = Path(__file__).resolve().parent / "peer_servers"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get update && apt-get install -y wrk nghttp2-client")


def download_graph(port: int, path: Path) -> tuple[Path, list[str]]:
    """Assemble every task of factor set ``bench`` on the KF server and save the graph: what every peer serves."""
    base = f"http://127.0.0.1:{port}"
    meta = httpx.get(f"{base}/v2/models/bench", timeout=60).json()
    tasks = list(meta["parameters"]["tasks"])
    assembly = httpx.post(f"{base}/v1/assemblies", json={"factor_set": "bench", "tasks": tasks}, timeout=120).json()
    path.write_bytes(httpx.get(base + assembly["onnx_url"], timeout=60).content)
    return path, tasks


# ------------------------------------------------------------------------------------------------ peer processes
def start_peer(name: str, venv: Path, port: int, env: dict[str, str], root: Path, target: Target) -> Any:
    """Start a peer server (its own process group) and wait until it answers ``target``'s request."""
    bin_dir = venv / "bin"
    env = {**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}", "VIRTUAL_ENV": str(venv)}
    if name == "fastapi":
        cmd = [str(bin_dir / "python"), "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log"]
    elif name == "bentoml":
        cmd = [str(bin_dir / "bentoml"), "serve", "bentoml_service:Graph", "--host", "127.0.0.1", "--port", str(port)]
    elif name == "mlserver":
        cmd = [str(bin_dir / "mlserver"), "start", str(_mlserver_dir(root, port))]
    else:
        cmd = [str(bin_dir / "python"), str(SERVERS / "ray_app.py"), str(port)]
    log = root / f"{name}.log"
    proc = subprocess.Popen(
        cmd, cwd=SERVERS, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if _send(target).status_code == 200:
                print(f"{name} is serving on port {port}", flush=True)
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"{name} not serving on port {port} after 300 s:\n{log.read_text()[-3000:]}")


def _mlserver_dir(root: Path, port: int) -> Path:
    from serve import free_port

    folder = root / "mlserver"
    folder.mkdir(exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,  # inference in the server process, as every other server here
        "debug": False,  # no access log (KF writes none either)
    }
    model = {
        "name": "graph",
        "implementation": "mlserver_model.GraphModel",
        "max_batch_size": 64,
        "max_batch_time": 0.0005,  # MLServer needs a positive wait to batch at all: the shortest sensible one
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    return folder


def stop(proc: Any) -> None:
    """Stop a server: its whole process group when it has one of its own (peers), else the process."""
    if proc.poll() is not None:
        return
    own = os.getpgid(proc.pid) == proc.pid
    (os.killpg if own else os.kill)(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        (os.killpg if own else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ------------------------------------------------------------------------------------------------ answers
def _send(target: Target) -> httpx.Response:
    return httpx.request(
        target.method,
        f"http://127.0.0.1:{target.port}{target.path}",
        content=target.body or None,
        headers=target.headers,
        timeout=30,
    )


def check_outputs(target: Target, want: list[np.ndarray]) -> None:
    """Fail unless ``target`` answers what ONNX Runtime computes in this process."""
    if target.grpc:
        got = _grpc_call(target)
    else:
        r = _send(target)
        if r.status_code != 200:
            raise SystemExit(f"{target.name}: HTTP {r.status_code}: {r.text[:300]}")
        assert target.parse is not None
        got = target.parse(r.content, {k.lower(): v for k, v in r.headers.items()})
    if len(got) == 1 and len(want) > 1:
        want = [np.concatenate(want, axis=1)]
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape or not np.allclose(g, w, atol=1e-5):
            raise SystemExit(f"{target.name}: answer differs from in-process ONNX Runtime")


def _grpc_stub(target: Target) -> tuple[Any, Any]:
    import grpc

    from service.api.oip_grpc.protocol import protocol

    proto = protocol()
    channel = grpc.insecure_channel(f"127.0.0.1:{target.port}")
    call = channel.unary_unary(
        target.path,
        request_serializer=lambda raw: raw,  # the request is serialized once, up front
        response_deserializer=proto.ModelInferResponse.FromString,
    )
    return channel, call


def _grpc_call(target: Target) -> list[np.ndarray]:
    channel, call = _grpc_stub(target)
    with channel:
        response = call(target.body[5:])
    shapes = {o.name: list(o.shape) for o in response.outputs}
    names = [o.name for o in response.outputs]
    assert names == target.extra["outputs"], names
    return [
        np.frombuffer(raw, dtype="<f4").reshape(shapes[n])
        for n, raw in zip(names, response.raw_output_contents, strict=True)
    ]


# ------------------------------------------------------------------------------------------------ measurements
def in_process(session: Any, outputs: list[str], x: np.ndarray, *, seconds: float) -> tuple[float, float]:
    """p50 and p99 (ms) of ``session.run`` at batch 1 in this process: the floor of any server."""
    for _ in range(50):
        session.run(outputs, {"x": x})
    times, stop_at = [], time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        session.run(outputs, {"x": x})
        times.append(1000 * (time.perf_counter() - t))
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


def sequential(target: Target, seconds: float) -> dict[str, Any]:
    """Batch 1, one request at a time: p50 and p99 latency (ms)."""
    if target.grpc:
        return _grpc_sequential(target, seconds)
    return _wrk(target, connections=1, threads=1, seconds=seconds)


def throughput(target: Target, concurrency: int, seconds: float, *, server_pid: int | None = None) -> dict[str, Any]:
    """Requests per second with ``concurrency`` requests in flight (one connection each), and the CPU time each
    request cost: the server's (``server_pid`` and every process under it; ``main_thread``: that process's first
    thread alone, KF's event loop) and the load generator's, in microseconds (CPU used over the run / requests
    answered over it, counting h2load's warm-up second at the measured rate)."""
    started, client = time.perf_counter(), _children_cpu()
    server = server_cpu(server_pid) if server_pid else None
    if target.grpc:
        got = _h2load(target, concurrency, seconds)
    else:
        got = _wrk(target, connections=concurrency, threads=2, seconds=seconds)
    done = got["rps"] * (time.perf_counter() - started)
    if done > 0:
        got["client_cpu_us"] = (_children_cpu() - client) / done * 1e6
        if server is not None:
            now = server_cpu(server_pid)  # type: ignore[arg-type]
            got["server_cpu_us"] = (now[0] - server[0]) / done * 1e6
            got["main_thread_cpu_us"] = (now[1] - server[1]) / done * 1e6
    return got


def server_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds used so far by process ``pid`` and every process under it, and by ``pid``'s first thread."""
    parent, used = {}, {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):  # exited while listed
                parent[int(entry.name)], used[int(entry.name)] = _stat(Path(entry.path, "stat"))
    children = defaultdict(list)
    for p, pp in parent.items():
        children[pp].append(p)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += used.get(p, 0.0)
        todo += children[p]
    try:
        main = _stat(Path(f"/proc/{pid}/task/{pid}/stat"))[1]
    except (OSError, ValueError):
        main = 0.0
    return total, main


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) the process has used: a cost per request that other processes'
    load does not inflate the way it inflates wall-clock throughput."""
    return _stat(Path(f"/proc/{pid}/stat"))[1]


def _stat(path: Path) -> tuple[int, float]:
    """(parent pid, user + system CPU seconds) from a /proc stat file (the name in parentheses may hold spaces)."""
    fields = path.read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * _TICK_S


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the load generators; servers still run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wrk(target: Target, *, connections: int, threads: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kf-wrk-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(target.body)
        lines = [f'wrk.method = "{target.method}"']
        if target.body:
            lines.append(f'local f = assert(io.open("{body}", "rb")); wrk.body = f:read("*a"); f:close()')
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items()]
        script = Path(tmp) / "request.lua"
        script.write_text("\n".join(lines) + "\n")
        url = f"http://127.0.0.1:{target.port}{target.path}"
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    latency: dict[str, float] = {}
    for q, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        latency[q] = float(value) * _UNITS[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if done == 0:  # wrk then prints 0.00us latencies: no figure, and an error
        print(f"{target.name}: no request completed in {seconds:g} s (c={connections})", flush=True)
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": errors + 1}
    return {"rps": rps, "p50_ms": latency["50"], "p99_ms": latency["99"], "errors": errors}


def _h2load(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(prefix="kf-h2load-", suffix=".bin") as body:
        body.write(target.body)
        body.flush()
        cmd = ["h2load", f"-c{concurrency}", "-m1", f"-D{seconds:g}", "--warm-up-time=1", "-d", body.name]
        cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        cmd.append(f"http://127.0.0.1:{target.port}{target.path}")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    errors = sum(int(g) for g in failed.groups()) if failed else 0
    return {"rps": rps, "errors": errors}


def _grpc_sequential(target: Target, seconds: float) -> dict[str, Any]:
    channel, call = _grpc_stub(target)
    message = target.body[5:]
    with channel:
        for _ in range(50):
            call(message)
        times, stop_at = [], time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            call(message)
            times.append(1000 * (time.perf_counter() - t))
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99)], "errors": 0}


def grpc_failures(kf_port: int) -> int:
    """ModelInfer calls the KF server answered with an error (h2load counts only HTTP/2 statuses, always 200)."""
    text = httpx.get(f"http://127.0.0.1:{kf_port}/metrics", timeout=10).text
    found = re.findall(r'^kf_grpc_requests_total\{code="(\w+)",method="ModelInfer"\} ([\d.e+]+)$', text, re.M)
    return int(sum(float(n) for code, n in found if code != "OK"))
