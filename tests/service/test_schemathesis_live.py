"""Schemathesis over a live server (``kf serve`` in its own process, as users run it): every phase (examples,
coverage, fuzzing, stateful sequences along the document's links), every check, a fixed seed. 0 failures means
the OpenAPI document and the server agree: no server error, no undocumented status or content type, every
request the schema rejects refused, every one it accepts answered as documented.

The catalog holds an admin API key (sent with every request) and a small real factor set, so prediction and
factor-set routes reach their real work; jobs are queued on a Redis queue no worker listens on (never trained).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_job, make_settings
from tests.service.helpers import free_port, wait_for
from tests.service.serving import register, train_small_factor_set

pytestmark = pytest.mark.slow

SEED = 20261206
EXAMPLES = 12  # per operation and phase: the whole run takes about a minute on 2 cores
# A request can match the schema and still be wrong in ways no JSON Schema expresses (an uploaded file that is
# not a model, a task the factor set lacks, a teacher id that does not exist): those are the 4xx the API
# documents, each with a message saying what to fix.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[str, str, Path]]:
    from service.catalog.artifacts import open_store
    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.keys import create_key
    from service.catalog.migrate import upgrade
    from service.config import settings_env

    root = tmp_path_factory.mktemp("schemathesis")
    settings = make_settings(root, f"sqlite:///{root}/catalog.db", redis_url=redis_url, max_batch=8)
    upgrade(settings)
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    store = open_store(settings)
    with factory() as session:
        _, key = create_key(session=session, scope="admin", name="schemathesis")
        session.commit()
        register(
            train_small_factor_set(root / "run"),
            session=session,
            job=make_job(session, store),
            factory=factory,
            store=store,
        )
    engine.dispose()
    port = free_port()
    log_path = root / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--log-level", "warning"],
            env={**os.environ, **settings_env(settings)},
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
        yield url, key, root
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_schemathesis_stateful_with_every_check_finds_nothing(live: tuple[str, str, Path]) -> None:
    url, key, root = live
    config = root / "schemathesis.toml"
    config.write_text(CONFIG)
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--phases=examples,coverage,fuzzing,stateful",
        "--checks=all",
        f"--seed={SEED}",
        f"--max-examples={EXAMPLES}",
        "--workers=1",
        "--request-timeout=60",
        "--suppress-health-check=all",
        f"--header=Authorization: Bearer {key}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=root)  # its cache goes there
    out = done.stdout[-20000:] + done.stderr[-5000:]
    assert done.returncode == 0, out
    print(out[out.find("Stateful (") :])  # phases, scenarios, links covered, test cases, seed: for the log
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase} \(", out), (phase, out)  # run, not skipped, and passed
    scenarios = re.search(r"Scenarios:\s+(\d+)", out)
    assert scenarios is not None and int(scenarios.group(1)) > 0, out
