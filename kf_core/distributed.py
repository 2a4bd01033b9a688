"""Multi-process training with torch.distributed: where this process sits in the group, and the few collectives
the training loop needs.

A factorization in N processes is data parallel: every process holds the whole factor network wrapped in
DistributedDataParallel, takes 1/N of each global batch (a DistributedSampler over the training set) and
gradients are averaged across processes after every backward pass. Two things stay per process, as in the
paper's own code: the InfoMax negatives (the other images of the *local* batch) and the BatchNorm batch
statistics (no SyncBatchNorm). Rank 0 alone reports progress, writes checkpoints and produces the run's outputs.

kf_core reads no environment variables: a launcher (``torchrun``, the ``kf`` CLI, a job runner) builds a
:class:`DistConfig` with explicit arguments, or passes its environment to :meth:`DistConfig.from_torchrun_env`.
A process that dies makes every collective of the others fail (at the latest after ``timeout_s``), so the run
stops with an error instead of hanging; its checkpoint lets a retry resume with any number of processes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from kf_core.errors import ConfigError

__all__ = ["SINGLE", "Dist", "DistConfig", "process_group"]

_TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistConfig:
    """How this process joins a training group (torchrun's variables, passed explicitly)."""

    rank: int  # this process's index in the group, 0 .. world_size - 1 (RANK)
    world_size: int  # number of training processes (WORLD_SIZE)
    local_rank: int = 0  # index among the processes on this host: picks the GPU (LOCAL_RANK)
    master_addr: str = "127.0.0.1"  # where rank 0 listens for the rendezvous (MASTER_ADDR)
    master_port: int = 29500  # and on which port (MASTER_PORT)
    backend: str = "auto"  # "auto" (NCCL when training on CUDA, else gloo), "gloo" or "nccl"
    timeout_s: float = 300.0  # a collective waiting longer than this fails the run (a lost peer)

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not within a group of {self.world_size} process(es)")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ConfigError(f"backend {self.backend!r} is unknown; use auto, gloo or nccl")
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s must be positive")

    @classmethod
    def from_torchrun_env(cls, env: Mapping[str, str], *, timeout_s: float = 300.0) -> DistConfig | None:
        """The group torchrun (or a compatible launcher) put this process in, from its environment ``env``;
        None when ``env`` has no ``WORLD_SIZE`` (not launched that way)."""
        if "WORLD_SIZE" not in env:
            return None
        missing = [k for k in _TORCHRUN_KEYS if k not in env]
        if missing:
            raise ConfigError(f"launched with WORLD_SIZE but without {', '.join(missing)}; start it with torchrun")
        try:
            return cls(
                rank=int(env["RANK"]),
                world_size=int(env["WORLD_SIZE"]),
                local_rank=int(env["LOCAL_RANK"]),
                master_addr=env["MASTER_ADDR"],
                master_port=int(env["MASTER_PORT"]),
                timeout_s=timeout_s,
            )
        except ValueError as e:
            raise ConfigError(f"torchrun variables must be integers where numeric ({e})") from None


class Dist:
    """This process's place in a training group and the collectives the loop uses.

    With one process (:data:`SINGLE`) every collective returns its input, so the loop has one code path.
    """

    def __init__(self, *, rank: int = 0, world_size: int = 1, local_rank: int = 0, backend: str = "") -> None:
        self.rank, self.world_size, self.local_rank, self.backend = rank, world_size, local_rank, backend

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reports progress, checkpoints and writes the results."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: with NCCL, its own GPU (``cuda:LOCAL_RANK``)."""
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def all_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``values`` over all processes (one collective for a whole metric vector)."""
        if not self.active:
            return values
        buf = values.detach().to(self._comm_device(), torch.float64)
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        return (buf / self.world_size).to(values.device)

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (a cancel seen by rank 0 stops all)."""
        if not self.active:
            return flag
        buf = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        tdist.all_reduce(buf, op=tdist.ReduceOp.MAX)
        return bool(buf.item() > 0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (picklable; the others pass anything)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` rows (the last may be shorter)."""
        per = -(-n // self.world_size)
        return slice(min(n, self.rank * per), min(n, (self.rank + 1) * per))

    def gather_rows(self, rows: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every process's :meth:`shard` of ``n`` rows (``rows``) into all ``n`` rows, everywhere."""
        if not self.active:
            return rows
        per = -(-n // self.world_size)
        padded = torch.zeros((per, *rows.shape[1:]), dtype=rows.dtype, device=self._comm_device())
        padded[: len(rows)] = rows.to(padded.device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        tdist.all_gather(parts, padded)
        return torch.cat(parts)[:n].to(rows.device)


SINGLE = Dist()


@contextlib.contextmanager
def process_group(cfg: DistConfig, *, device: str = "auto") -> Iterator[Dist]:
    """Join the group described by ``cfg`` for the duration of the block (one process: nothing to join).

    ``device`` is the training config's device: CUDA training uses NCCL and one GPU per local rank, CPU gloo.
    """
    if cfg.world_size == 1:
        yield Dist()
        return
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl":
        if not torch.cuda.is_available() or cfg.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"NCCL on local rank {cfg.local_rank} needs that many GPUs; torch sees "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}: start fewer processes per host"
            )
        torch.cuda.set_device(cfg.local_rank)
    tdist.init_process_group(
        backend=backend,
        init_method=f"tcp://{cfg.master_addr}:{cfg.master_port}",
        rank=cfg.rank,
        world_size=cfg.world_size,
        timeout=dt.timedelta(seconds=cfg.timeout_s),
    )
    try:
        yield Dist(rank=cfg.rank, world_size=cfg.world_size, local_rank=cfg.local_rank, backend=backend)
    finally:
        tdist.destroy_process_group()
