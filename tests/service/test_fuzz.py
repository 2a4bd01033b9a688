"""Schemathesis against the app's own OpenAPI document, in process: every operation, every check, at least 100
examples each. No server error, no undocumented status code, every response matching its schema.

The app runs on a migrated SQLite catalog holding a small real factor set (so prediction routes reach the
runtime, not only the 404 of an unknown factor set); jobs are recorded, not run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import RecordingRunner, make_job, make_settings
from tests.service.serving import register, train_small_factor_set


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from fastapi.testclient import TestClient

    from service.catalog.artifacts import open_store
    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.migrate import upgrade
    from service.main import create_app

    root: Path = tmp_path_factory.mktemp("fuzz")
    cfg = make_settings(root, f"sqlite:///{root}/catalog.db", max_request_bytes=1 << 20, max_batch=8)
    upgrade(cfg)
    engine = make_engine(cfg)
    factory = make_sessionmaker(engine)
    store = open_store(cfg)
    with factory() as session:
        from service.catalog.keys import create_key

        _, key = create_key(session=session, scope="admin", name="fuzz")  # as in production: keys exist
        session.commit()
        register(
            train_small_factor_set(root / "run"),
            session=session,
            job=make_job(session, store),
            factory=factory,
            store=store,
        )
    engine.dispose()
    app = create_app(cfg, runner=RecordingRunner)
    with TestClient(app):  # the lifespan runs: catalog, runtime and runner are up for every generated call
        yield app, key


EXAMPLES = 100
# Every check runs. One is told what "accepted" means here: a request can match the schema and still be wrong in
# ways no JSON Schema expresses (an uploaded file that is not a model, a task the factor set lacks, an image of
# the wrong shape); those are the 422s (400s on /v2) the API documents, with a message saying what to fix.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def _fuzz(op: Any) -> int:
    """Run up to EXAMPLES generated requests against one operation; return how many were sent."""
    sent = 0

    @given(case=op.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same examples in every CI run
        database=None,
    )
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate()  # every check: no 5xx, documented status, schema-conformant response, ...

    run()
    return sent


def test_every_operation_honours_its_schema(fuzz_app: tuple[Any, str]) -> None:
    from schemathesis.config import SchemathesisConfig

    app, key = fuzz_app
    config = SchemathesisConfig.from_str(CONFIG + f'\n[auth.openapi.apiKey]\nbearer = "{key}"\n')
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    examples: dict[str, int] = {}
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        try:
            examples[op.label] = _fuzz(op)
        except Exception as exc:
            failures[op.label] = f"{type(exc).__name__}: {str(exc)[:3000]}"
    assert not failures, "\n\n".join(f"{label}\n{why}" for label, why in failures.items())
    assert len(examples) >= 25, sorted(examples)  # every operation of the API was generated for
    # Operations with any input got the full budget; the few without parameters (GET /v2, /metrics, ...)
    # have one possible request, which Hypothesis recognises and sends once.
    with_inputs = {label: n for label, n in examples.items() if "{" in label or label.startswith(("POST", "PUT"))}
    assert all(n >= EXAMPLES for n in with_inputs.values()), with_inputs
