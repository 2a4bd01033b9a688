"""Settings: defaults, fail-fast validation, and the environment hand-off to job processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings, get_settings, settings_env


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in __import__("os").environ if k.startswith("KF_")]:
        monkeypatch.delenv(name)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.database_url == "sqlite:///./kf-data/catalog.db"
    assert s.redis_url is None
    assert s.artifact_url == "./kf-data/artifacts" and not s.artifacts_are_remote
    assert s.s3_endpoint_url is None
    assert s.is_sqlite


def test_environment_is_read_with_the_kf_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KF_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("KF_REDIS_URL", "redis://example:6379/2")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.max_attempts == 7
    assert s.redis_url == "redis://example:6379/2"


def test_postgres_urls_get_the_psycopg_driver() -> None:
    s = Settings(_env_file=None, database_url="postgresql://u:p@db:5432/kf")  # type: ignore[call-arg]
    assert s.database_url == "postgresql+psycopg://u:p@db:5432/kf"
    assert not s.is_sqlite


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("database_url", "mysql://db/kf", "KF_DATABASE_URL must start with"),
        ("redis_url", "http://redis:6379", "KF_REDIS_URL must be"),
        ("max_attempts", 0, "greater than or equal to 1"),
        ("heartbeat_timeout_s", 1.0, "at least twice"),
        ("artifact_url", "ftp://host/x", "KF_ARTIFACT_URL must be a local directory or an object-store URL"),
        ("s3_endpoint_url", "minio:9000", "KF_S3_ENDPOINT_URL must be an http"),
    ],
)
def test_bad_values_fail_fast_with_the_fix(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **{field: value})  # type: ignore[arg-type]


def test_settings_env_rebuilds_the_same_settings(tmp_path: Path) -> None:
    s = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=f"sqlite:///{tmp_path}/c.db", artifact_url="rel/art", torch_threads=2
    )
    env = settings_env(s)
    assert env["KF_ARTIFACT_URL"] == str(Path("rel/art").resolve())  # absolute: children may chdir
    assert "KF_REDIS_URL" not in env and "KF_ARTIFACT_DIR" not in env
    rebuilt = Settings(_env_file=None, **{k[3:].lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    absolute = {
        "artifact_url": str(Path("rel/art").resolve()),
        "work_dir": s.work_dir.resolve(),
        "artifact_cache_dir": s.artifact_cache_dir.resolve(),
    }
    assert rebuilt.model_dump() == {**s.model_dump(), **absolute}


def test_object_store_urls_pass_to_children_unchanged() -> None:
    s = Settings(_env_file=None, artifact_url="s3://bucket/kf", s3_endpoint_url="http://minio:9000")  # type: ignore[call-arg]
    assert s.artifacts_are_remote
    env = settings_env(s)
    assert (env["KF_ARTIFACT_URL"], env["KF_S3_ENDPOINT_URL"]) == ("s3://bucket/kf", "http://minio:9000")


def test_the_old_artifact_dir_variable_still_names_a_local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KF_ARTIFACT_URL", raising=False)
    monkeypatch.setenv("KF_ARTIFACT_DIR", "/srv/kf/artifacts")
    assert Settings(_env_file=None).artifact_url == "/srv/kf/artifacts"  # type: ignore[call-arg]
    monkeypatch.setenv("KF_ARTIFACT_URL", "s3://bucket/kf")  # the new name wins
    assert Settings(_env_file=None).artifact_url == "s3://bucket/kf"  # type: ignore[call-arg]


def test_get_settings_is_cached() -> None:
    assert get_settings() is get_settings()
