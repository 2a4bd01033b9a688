"""Aliases (``name@alias``): set, move and delete them through the API and the CLI; every reference parser
follows them; a running ``kf serve`` serves a moved alias without a restart (acceptance 3 of issue 16).

Versions 1 and 2 of ``fs`` are two real small factorizations that differ only in their seed, so their outputs
tell which version answered.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.catalog import aliases as catalog_aliases
from service.catalog.db import session_scope
from tests.conftest import open_client
from tests.factories import queued_job
from tests.service.helpers import free_port, wait_for
from tests.service.serving import Trained, register, train_small_factor_set

TOL = 1e-5


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Trained]:
    return (
        train_small_factor_set(tmp_path_factory.mktemp("v1"), seed=0),
        train_small_factor_set(tmp_path_factory.mktemp("v2"), seed=1),
    )


@pytest.fixture
def versions(trained_pair: tuple[Trained, Trained], session: Any, job: Any, factory: Any, store: Any) -> list[Any]:
    """``fs`` versions 1 and 2, registered by two jobs as workers would."""
    first = register(trained_pair[0], session=session, job=job, factory=factory, store=store)
    job2 = queued_job(session, teacher_id=job.teacher_id, dataset_id=job.dataset_id)
    second = register(trained_pair[1], session=session, job=job2, factory=factory, store=store)
    assert (first.version, second.version) == (1, 2)
    return [first, second]


@pytest.fixture
def server(versions: Any, migrated: Any, tmp_path: Path) -> Iterator[str]:  # noqa: ARG001 (versions first)
    """A real ``kf serve`` process on the test's catalog and artifact store."""
    from service.config import settings_env

    env = {**os.environ, **settings_env(migrated)}
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{url}/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, what="kf serve to answer", interval=0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _v1_logits(url: str, ref: str, x: np.ndarray) -> dict[str, np.ndarray]:
    r = httpx.post(f"{url}/v1/predict", json={"factor_set": ref, "inputs": x.tolist(), "logits": True}, timeout=60)
    assert r.status_code == 200, r.text
    return {t: np.asarray(p["logits"]) for t, p in r.json()["predictions"].items()}


def _v2_logits(url: str, model: str, x: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    logits = {
        o["name"].removeprefix("logits_"): np.asarray(o["data"]).reshape(o["shape"])
        for o in out["outputs"]
        if o["name"].startswith("logits_")
    }
    return out["model_version"], logits


def _which(got: dict[str, np.ndarray], pair: tuple[Trained, Trained]) -> int:
    """1 or 2: the version whose factor networks computed ``got`` (within 1e-5), else 0."""
    for version, trained in enumerate(pair, start=1):
        want = trained.logits()
        if set(got) <= set(want) and all(np.abs(got[t] - want[t]).max() <= TOL for t in got):
            return version
    return 0


def test_a_moved_alias_changes_what_v1_and_v2_clients_get_without_a_restart(
    server: str, trained_pair: tuple[Trained, Trained], factory: Any
) -> None:
    x = trained_pair[0].x
    assert _which(_v1_logits(server, "fs:1", x), trained_pair) == 1  # the two versions really differ
    assert _which(_v1_logits(server, "fs:2", x), trained_pair) == 2

    r = httpx.put(f"{server}/v1/factor-sets/fs/aliases/prod", json={"version": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["ref"], r.json()["version"]) == ("fs@prod", 1)
    assert _which(_v1_logits(server, "fs@prod", x), trained_pair) == 1
    version, logits = _v2_logits(server, "fs@prod", x)
    assert (version, _which(logits, trained_pair)) == ("1", 1)

    # Moved through this server's API: its next request already follows the alias.
    assert httpx.put(f"{server}/v1/factor-sets/fs/aliases/prod", json={"version": 2}).status_code == 200
    assert _which(_v1_logits(server, "fs@prod", x), trained_pair) == 2
    version, logits = _v2_logits(server, "fs@prod", x)
    assert (version, _which(logits, trained_pair)) == ("2", 2)

    # Moved behind the server's back (another replica, the CLI on another host): followed within the resolve TTL.
    with session_scope(factory) as session:
        catalog_aliases.set_alias(session=session, name="fs", alias="prod", version=1)
    wait_for(
        lambda: _which(_v1_logits(server, "fs@prod", x), trained_pair) == 1,
        timeout=30,
        what="the server to follow the alias moved in the catalog",
    )
    wait_for(lambda: _v2_logits(server, "fs@prod", x)[0] == "1", timeout=30, what="v2 to follow the alias")


def test_the_cli_sets_lists_moves_and_deletes_aliases(server: str, capsys: Any) -> None:
    from service.cli import main as kf

    assert kf(["aliases", "set", "fs", "prod", "1", "--api", server]) == 0
    assert kf(["aliases", "set", "fs", "prod", "2", "--api", server]) == 0
    assert kf(["aliases", "set", "fs", "canary", "1", "--api", server]) == 0
    capsys.readouterr()
    assert kf(["aliases", "list", "fs", "--api", server]) == 0
    out = capsys.readouterr().out
    assert "fs@canary" in out and "fs@prod" in out and "version 2" in out and "2 alias(es)" in out
    assert kf(["aliases", "delete", "fs", "canary", "--api", server]) == 0
    assert kf(["aliases", "set", "fs", "prod", "9", "--api", server]) == 2
    assert "fs:9 does not exist" in capsys.readouterr().err
    listed = httpx.get(f"{server}/v1/factor-sets/fs/aliases").json()
    assert [(a["alias"], a["version"]) for a in listed["data"]] == [("prod", 2)]


def test_aliases_through_the_api(versions: list[Any], migrated: Any) -> None:
    with open_client(migrated, run_jobs=False) as api:
        assert api.put("/v1/factor-sets/fs/aliases/prod", json={"version": 2}).status_code == 200
        shown = api.get("/v1/factor-sets/fs@prod").json()
        assert (shown["id"], shown["version"], shown["aliases"]) == (str(versions[1].id), 2, ["prod"])
        assert api.get("/v1/factor-sets/fs:1").json()["aliases"] == []
        assert api.get("/v1/factor-sets/fs").json()["version"] == 2  # a bare name: its latest version
        assert api.get(f"/v1/factor-sets/{versions[0].id}").json()["version"] == 1
        assert api.post("/v1/assemblies", json={"factor_set": "fs@prod", "tasks": ["shape"]}).status_code == 200
        assert api.get("/v2/models/fs@prod").json()["versions"] == ["1", "2"]

        missing = api.get("/v1/factor-sets/fs@nope")
        assert missing.status_code == 404 and "fs@nope" in missing.json()["detail"]
        assert "aliases" in missing.json()["detail"]
        bad = api.put("/v1/factor-sets/fs/aliases/9lives", json={"version": 1})
        assert bad.status_code == 422 and "start with a letter" in bad.json()["detail"]
        assert api.put("/v1/factor-sets/fs/aliases/prod", json={"version": 3}).status_code == 404
        assert api.put("/v1/factor-sets/nope/aliases/prod", json={"version": 1}).status_code == 404
        assert api.put("/v1/factor-sets/fs/aliases/prod", json={"version": 0}).status_code == 422
        assert api.delete("/v1/factor-sets/fs/aliases/prod").status_code == 200
        assert api.delete("/v1/factor-sets/fs/aliases/prod").status_code == 404
        assert api.post("/v1/predict", json={"factor_set": "fs@prod", "inputs": [[[[0.0]]]]}).status_code == 404


def test_pins_accept_aliases(versions: list[Any], migrated: Any, session: Any) -> None:
    catalog_aliases.set_alias(session=session, name="fs", alias="prod", version=1)
    session.commit()
    with open_client(migrated.model_copy(update={"pin": "fs@prod=shape"}), run_jobs=False) as api:
        wait_for(lambda: api.get("/v2/health/ready").status_code == 200, timeout=30, what="the pin to load")
        resident = api.app.state.runtime.resident_sets()
        assert [r.factor_set.id for r in resident] == [versions[0].id]


def test_changing_an_alias_needs_an_admin_key(versions: list[Any], migrated: Any, session: Any) -> None:  # noqa: ARG001
    from service.catalog.keys import create_key

    _, predict_key = create_key(session=session, scope="predict")
    _, admin_key = create_key(session=session, scope="admin")
    session.commit()
    with open_client(migrated, run_jobs=False) as api:
        path = "/v1/factor-sets/fs/aliases/prod"
        as_predict = api.put(path, json={"version": 1}, headers={"Authorization": f"Bearer {predict_key}"})
        assert as_predict.status_code == 403
        as_admin = api.put(path, json={"version": 1}, headers={"Authorization": f"Bearer {admin_key}"})
        assert as_admin.status_code == 200
        assert api.get(f"{path[:-5]}", headers={"Authorization": f"Bearer {predict_key}"}).status_code == 200
