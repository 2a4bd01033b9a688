"""Service settings: one typed object read from ``KF_*`` environment variables (or a ``.env`` file).

``get_settings()`` is cached and injected (``SettingsDep``), so tests build their own :class:`Settings` and pass
it to ``create_app(settings)``. Background processes (inline job runners, ``kf worker``) receive the same values
through :func:`settings_env`, so a job runs with exactly the configuration of the process that started it.
Values are checked when the settings are built: a bad URL or an impossible timing fails at startup, not mid-job.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "settings_env"]

_DB_SCHEMES = ("sqlite", "postgresql+psycopg")


class Settings(BaseSettings):
    """Everything the service can be configured with. Environment variable = ``KF_`` + field name, upper case."""

    model_config = SettingsConfigDict(env_prefix="KF_", env_file=".env", extra="ignore", frozen=True)

    # Catalog: SQLite file by default, PostgreSQL (postgresql+psycopg://user:pass@host/db) for several hosts.
    database_url: str = "sqlite:///./kf-data/catalog.db"
    # Unset: jobs run inline (a background process per job, started by the API). Set: jobs go on an RQ queue.
    redis_url: str | None = None
    # Content-addressed artifacts: a local directory (default) or an object store, e.g. s3://bucket/prefix
    artifact_url: str = "./kf-data/artifacts"
    artifact_dir: Path | None = Field(default=None, exclude=True)  # deprecated name of a local artifact_url
    artifact_cache_dir: Path = Path("./kf-data/artifact-cache")  # object store: local read-through cache
    artifact_cache_bytes: int = Field(default=4 << 30, ge=0)  # object store: cache size limit (LRU eviction)
    s3_endpoint_url: str | None = None  # S3-compatible stores other than AWS (MinIO, Ceph, ...)
    # gc: files stored but not (yet) registered are kept this long (and while any job that started before them runs)
    gc_grace_s: float = Field(default=3600.0, ge=0)
    work_dir: Path = Path("./kf-data/work")  # per-job scratch space (checkpoints, exported parts before storing)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # jobs and serving; "cuda" fails if CUDA is not usable
    cache_bytes: int = Field(default=2 << 30, ge=0)  # serving: memory budget of the ONNX Runtime session cache
    max_batch: int = Field(default=64, ge=1)  # serving: largest micro-batch
    # serving: how long the first request after an idle spell waits for others to join its batch; unset: 0 on the
    # CPU (per-sample cost dominates, and a waiting session is a stalled one), 2 ms on CUDA (launches dominate)
    batch_wait_ms: float | None = Field(default=None, ge=0)
    infer_threads: int | None = Field(default=None, ge=1)  # serving: ORT intra-op threads (None: usable cores)
    # serving: intra-op workers spin-wait within a run and sleep between runs (lowest latency); off: they sleep
    # whenever idle, which leaves more CPU to gRPC's own threads under load on a small machine (kf_core.ort)
    infer_spin: bool = True
    allow_anonymous: bool = False  # kf serve: accept listening beyond 127.0.0.1 while no API key exists
    pin: str = ""  # serving: assemblies built at start-up and never evicted, "ref[=task,task];ref..."
    # serving: the Open Inference Protocol over gRPC on this port, in the API's process (unset: off); it listens on
    # KF_GRPC_HOST, which `kf serve` sets to its own --host unless given
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"

    max_upload_bytes: int = Field(default=512 << 20, ge=1)  # largest accepted upload (teacher file, npz dataset)
    max_request_bytes: int = Field(default=64 << 20, ge=1024)  # largest JSON request body (predictions, jobs)
    queue: str = Field(default="kf", min_length=1)  # RQ queue of CPU jobs; jobs asking for CUDA go to "gpu"
    job_timeout_s: int = Field(default=7 * 24 * 3600, ge=1)  # RQ hard limit of one run of a job
    max_attempts: int = Field(default=3, ge=1)  # runs of a job (first one included) before it is marked failed
    heartbeat_interval_s: float = Field(default=5.0, gt=0)  # how often a running job proves it is alive
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)  # silence after which a running job counts as lost
    progress_interval_s: float = Field(default=1.0, ge=0)  # least time between two progress writes
    cancel_grace_s: float = Field(default=3.0, ge=0)  # after a cancel, how long a job may take to stop by itself
    inline_concurrency: int = Field(default=1, ge=1)  # jobs the inline runner runs at once
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # service processes (API, workers, jobs)
    torch_threads: int | None = Field(default=None, ge=1)  # intra-op threads of a job (None: torch's default)
    # distributed jobs: a collective waiting longer than this fails the attempt (a lost process); it is retried
    dist_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str) -> str:
        scheme = v.split("://", 1)[0]
        if scheme == "postgresql" or scheme == "postgres":
            return "postgresql+psycopg://" + v.split("://", 1)[1]  # one driver everywhere: psycopg 3
        if scheme not in _DB_SCHEMES or "://" not in v:
            raise ValueError(
                f"KF_DATABASE_URL must start with sqlite:/// or postgresql+psycopg://, got {v!r} "
                "(e.g. sqlite:///./kf-data/catalog.db or postgresql+psycopg://user:pass@host:5432/kf)"
            )
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"KF_REDIS_URL must be a redis://, rediss:// or unix:// URL, got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _artifact_dir_alias(cls, data: Any) -> Any:
        # KF_ARTIFACT_DIR (the old name) still works for a local store; KF_ARTIFACT_URL wins when both are set.
        if isinstance(data, dict) and data.get("artifact_dir") and not data.get("artifact_url"):
            data = {**data, "artifact_url": str(data["artifact_dir"])}
        return data

    @field_validator("artifact_url")
    @classmethod
    def _check_artifact_url(cls, v: str) -> str:
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme not in ("", "file", "s3", "s3a", "gs", "gcs", "az", "abfs") or v.endswith("://"):
            raise ValueError(
                f"KF_ARTIFACT_URL must be a local directory or an object-store URL such as s3://bucket/prefix, "
                f"got {v!r}"
            )
        return v

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"KF_S3_ENDPOINT_URL must be an http:// or https:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_timing(self) -> Settings:
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"KF_HEARTBEAT_TIMEOUT_S ({self.heartbeat_timeout_s}) must be at least twice "
                f"KF_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s}), or healthy jobs would be declared lost"
            )
        return self

    @property
    def artifacts_are_remote(self) -> bool:
        return "://" in self.artifact_url and not self.artifact_url.startswith("file://")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """``KF_*`` variables that rebuild ``settings`` in a child process (unset optional values are left out)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, Path) or (name == "artifact_url" and not settings.artifacts_are_remote):
            value = Path(str(value).removeprefix("file://")).resolve()  # a child may run in another directory
        if value is not None:
            env[f"KF_{name.upper()}"] = str(value)
    return env
