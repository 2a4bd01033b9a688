"""The other processes of a distributed factorization job (``processes`` > 1).

The job's own process is rank 0: it keeps the lease, the heartbeat, the progress and checkpoint callbacks, and
alone registers the result. It starts ranks 1 .. N-1 on this host as ``python -m service.jobs.peers SPEC.json`` with
torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so a peer is exactly what
torchrun would start. A peer loads the same teacher and recipe from the job's work directory, trains its share
and writes nothing. If any process dies, the others' next collective fails (or times out after
``KF_DIST_TIMEOUT_S``): the attempt fails, the job machinery retries it, and the retry resumes from the stored
checkpoint with whatever number of processes it asks for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from kf_core import DistConfig, Recipe, process_group, run_factorization
from kf_core.errors import TrainingCancelled
from service.catalog.teachers import open_teacher
from service.config import Settings, get_settings, settings_env
from service.logs import configure_logging

__all__ = ["job_threads", "open_job_teacher", "peer_processes"]

log = logging.getLogger(__name__)


def job_threads(settings: Settings, processes: int) -> int:
    """Intra-op threads per training process: KF_TORCH_THREADS, or this host's cores shared out."""
    return settings.torch_threads or max(1, (os.cpu_count() or 1) // processes)


def open_job_teacher(spec: Mapping[str, Any]) -> Any:
    """The job's teacher from its ``spec["teacher"]`` (path, format and the catalog row's fields), on any rank."""
    t = spec["teacher"]
    return open_teacher(
        Path(t["path"]),
        format=t["format"],
        outputs=t["outputs"],
        features=t["features"],
        input_shape=t["input_shape"],
        class_names=t["class_names"],
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def peer_processes(settings: Settings, spec: Mapping[str, Any], work: Path, processes: int) -> Iterator[int]:
    """Start ranks 1 .. processes-1 for the job described by ``spec``; yields the rendezvous port for rank 0.

    On leaving the block the peers get a moment to finish, then are stopped: none outlives its job's attempt.
    """
    if processes == 1:
        yield 0
        return
    path = work / "peer.json"
    path.write_text(json.dumps(dict(spec)))
    port = _free_port()
    threads = str(job_threads(settings, processes))
    base = {**os.environ, **settings_env(settings), "OMP_NUM_THREADS": threads, "KF_TORCH_THREADS": threads}
    group = {"WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service.jobs.peers", str(path)],
            env={**base, **group, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in range(1, processes)
    ]
    try:
        yield port
    finally:
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("peer process %d did not stop with its job; killing it", p.pid)
                p.kill()
                p.wait()


def _run_peer(spec_path: Path) -> int:
    settings = get_settings()
    spec = json.loads(spec_path.read_text())
    group = DistConfig.from_torchrun_env(os.environ, timeout_s=settings.dist_timeout_s)
    if group is None:
        print("service.peers runs under torchrun's variables (RANK, WORLD_SIZE, ...)", file=sys.stderr)
        return 2
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    recipe = Recipe.from_json(spec["recipe"])
    teacher = open_job_teacher(spec)
    out = spec_path.parent / f"peer{group.rank}"  # never written: only rank 0 writes
    try:
        with process_group(group, device=recipe.train.device) as dist:
            run_factorization(recipe, teacher, out, task_names=spec["tasks"], dist=dist)
    except TrainingCancelled:
        return 0  # rank 0 records the cancel
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m service.jobs.peers SPEC.json", file=sys.stderr)
        return 2

    configure_logging(level=get_settings().log_level)
    return _run_peer(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
