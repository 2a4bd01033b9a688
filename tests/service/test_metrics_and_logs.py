"""``/metrics`` parses as Prometheus text and its counters move; every request gets an id and one structured log
line (both databases)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.logs import JsonFormatter


def _samples(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_request_counters_move(client: Any) -> None:
    key = ("kf_http_requests_total", (("method", "GET"), ("route", "/v1/jobs"), ("status", "200")))
    before = _samples(client).get(key, 0.0)
    for _ in range(3):
        assert client.get("/v1/jobs").status_code == 200
    client.get("/v1/jobs/00000000-0000-0000-0000-000000000000")
    after = _samples(client)
    assert after[key] == before + 3
    labels_404 = (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404"))
    assert after[("kf_http_requests_total", labels_404)] == 1  # labelled by template, not by URL
    assert after[("kf_http_request_duration_seconds_count", labels_404)] == 1
    assert ("kf_execution_provider_info", (("device", "cpu"), ("provider", "CPUExecutionProvider"))) in after
    for name in ("kf_assembly_cache_total", "kf_assembly_cache_evictions_total", "kf_assembly_cache_bytes"):
        assert any(k[0] == name for k in after), name


def test_job_counts_and_queue_depth_follow_the_catalog(client: Any, job: Any) -> None:
    samples = _samples(client)
    assert samples[("kf_jobs", (("status", "queued"),))] == 1
    assert samples[("kf_jobs", (("status", "running"),))] == 0
    assert samples[("kf_queue_depth", (("queue", job.queue),))] == 1


def test_every_response_carries_a_request_id_and_is_logged_once(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kf.request"):
        mine = client.get("/v1/jobs", headers={"X-Request-ID": "trace-42"})
        fresh = client.get("/v1/jobs", headers={"X-Request-ID": "bad id with spaces"})
    assert mine.headers["x-request-id"] == "trace-42"
    assert fresh.headers["x-request-id"] != "bad id with spaces" and len(fresh.headers["x-request-id"]) == 32
    lines = [r for r in caplog.records if r.name == "kf.request"]
    assert len(lines) == 2
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "trace-42"
    assert (fields["method"], fields["route"], fields["status"]) == ("GET", "/v1/jobs", 200)
    assert fields["duration_ms"] > 0
    record = json.loads(JsonFormatter().format(lines[0]))  # what a log shipper receives
    assert (record["level"], record["request_id"], record["route"]) == ("info", "trace-42", "/v1/jobs")


def test_made_request_ids_are_unique_within_a_process_and_across_forked_workers(client: Any) -> None:
    import os

    from service.api import middleware

    ids = {client.get("/v2/health/live").headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked worker: a prefix of its own
        os.write(write, middleware._ID_PREFIX.encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert len(child) == 16 and child != middleware._ID_PREFIX
    assert not any(i.startswith(child) for i in ids)
