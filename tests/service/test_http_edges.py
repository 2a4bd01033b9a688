"""The edges of HTTP, for every route the app has (enumerated from its OpenAPI document, never listed by hand):
any byte sequence as a body gets a 4xx with a message (never a 5xx), a body of the wrong media type a 415 naming
the accepted ones, OPTIONS and 405 an ``Allow`` header with every method of the path, and a 404's hint a route
that exists. The prediction routes are served by the fast path (``service.api.fastpath``), the others by FastAPI:
both are covered, as both are in the document."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from service.errors import _FIND

BOUNDARY = "kfboundary"
TRUNCATED_MULTIPART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{{"name": "x"}}\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="f.onnx"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02"
).encode()
BODIES = {
    "invalid UTF-8": b'{"factor_set": "\xff\xfe", "inputs": [[1]]}',
    "lone continuation byte": b"\x80",
    "binary garbage": bytes(range(256)) * 4,
    "truncated multipart": TRUNCATED_MULTIPART,
    "truncated JSON": b'{"inputs": [[1, 2',
    "UTF-16 JSON": '{"a": 1}'.encode("utf-16"),
    # valid JSON that the error message quotes back: lone surrogates cannot be UTF-8 encoded, orjson takes no
    # integer past 64 bits
    "lone surrogates": b'{"factor_set": "\\udaef", "dataset": "\\udaef", "tasks": ["\\udaef"], "inputs": "\\udc00"}',
    "a lone surrogate as a name": b'{"factor_set": "\\udaef", "tasks": ["a"], "inputs": [[1]]}',
    "a huge integer": b'{"factor_set": "fs", "logits": 118449494291944392622080, "inputs": {"a": 1}, "dataset": 1}',
}
CONTENT_TYPES = [
    "application/json",
    f"multipart/form-data; boundary={BOUNDARY}",
    "application/octet-stream",
    "text/plain",
]


def _operations(app: Any, method: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every operation in the app's OpenAPI document."""
    paths = app.openapi()["paths"]
    return [(m.upper(), p, op) for p, ops in paths.items() for m, op in ops.items() if method in (None, m.upper())]


def _concrete(template: str) -> str:
    """A path for ``template``, with parameters of the right shape (nothing by these ids exists)."""
    values = {"sha256": "0" * 64, "version": "1"}

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        return values.get(name, str(uuid.uuid4()) if name.endswith("_id") else "nope")

    return re.sub(r"\{([^}]+)\}", value, template)


def _message(r: Any) -> str:
    body = r.json()
    return str(body.get("detail") or body.get("error") or "")


def test_any_byte_sequence_as_a_body_is_a_4xx_with_a_message(client: Any) -> None:
    posts = _operations(client.app, "POST")
    assert len(posts) >= 10 and any(p == "/v1/predict" for _, p, _ in posts)
    with_body = 0
    for _, template, op in posts:
        path = _concrete(template)
        takes_body = "requestBody" in op
        with_body += takes_body
        for what, body in BODIES.items():
            for ctype in CONTENT_TYPES:
                r = client.post(path, content=body, headers={"content-type": ctype})
                assert r.status_code < 500, (template, what, ctype, r.status_code, r.text)
                if not takes_body:  # POST /v1/gc, /v1/jobs/{id}/cancel: the body is ignored
                    continue
                assert 400 <= r.status_code < 500, (template, what, ctype, r.status_code, r.text)
                assert _message(r), (template, what, ctype, r.text)
                assert "error parsing the body" not in r.text, (template, what, ctype, r.text)
    assert with_body >= 8


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/assemblies", "/v1/predict", "/v2/models/fs/infer"])
def test_a_body_that_is_not_utf8_is_refused_naming_the_problem(client: Any, path: str) -> None:
    r = client.post(path, content=BODIES["invalid UTF-8"], headers={"content-type": "application/json"})
    assert r.status_code == (400 if path.startswith("/v2") else 422), r.text
    assert "not UTF-8" in _message(r) and "0xff" in _message(r), r.text


def test_a_body_of_another_media_type_is_a_415_naming_the_accepted_ones(client: Any) -> None:
    checked = 0
    for method, template, op in _operations(client.app):
        accepted = list(op.get("requestBody", {}).get("content", {}))
        if not accepted:
            continue
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            r = client.request(method, _concrete(template), content=b'{"a": 1}', headers={"content-type": ctype})
            assert r.status_code == 415, (method, template, ctype, r.text)
            assert all(a in _message(r) for a in accepted) and ctype in _message(r), (template, r.text)
            checked += 1
    assert checked >= 2 * 10
    r = client.post("/v1/jobs", content=b'{"dataset": "digits"}')  # no Content-Type at all
    assert r.status_code == 415 and "application/json" in _message(r), r.text
    ok = client.post("/v1/jobs", content=b'{"dataset": "digits"}', headers={"content-type": "application/json"})
    assert ok.status_code == 422, ok.text  # JSON, with a charset or not, reaches validation
    r = client.post("/v1/jobs", content=b"{}", headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 422, r.text


def test_options_and_405_list_every_method_of_the_path(client: Any) -> None:
    methods: dict[str, set[str]] = {}
    for method, template, _ in _operations(client.app):
        methods.setdefault(template, set()).add(method)
    assert any(len(m) > 1 for m in methods.values())
    for template, declared in methods.items():
        path = _concrete(template)
        r = client.options(path)
        allow = {m.strip() for m in r.headers["allow"].split(",")}
        assert r.status_code == 204 and declared | {"OPTIONS"} <= allow, (template, r.headers)
        for other in {"GET", "PUT", "POST", "DELETE", "PATCH"} - allow:
            r = client.request(other, path)
            assert r.status_code == 405, (other, template, r.status_code)
            assert {m.strip() for m in r.headers["allow"].split(",")} == allow, (other, template, r.headers)
            assert template.startswith("/v2") or r.json()["error"] == "MethodNotAllowed"
    # a concrete path before a templated one (OpenAPI's rule): /v1/factor-sets/import, not /v1/factor-sets/{ref}
    assert client.options("/v1/factor-sets/import").headers["allow"] == "OPTIONS, POST"
    assert client.get("/v1/factor-sets/import").status_code == 405
    assert client.options("/v1/factor-sets/fs").headers["allow"] == "DELETE, GET, OPTIONS"


def test_the_path_table_remembers_a_bounded_number_of_paths_with_the_same_answers(client: Any) -> None:
    from service.api import paths

    table = paths.PathTable(client.app.openapi())
    asked = ["/v1/factor-sets/import", "/v1/factor-sets/fs", "/v2/models/m/infer", "/nowhere"]
    first = [(table.allowed(p), table.media_types("POST", p)) for p in asked]
    assert first[0] == (["OPTIONS", "POST"], first[0][1]) and first[3] == (None, ())
    assert [(table.allowed(p), table.media_types("POST", p)) for p in asked] == first  # answered from the memo
    for i in range(paths._MEMO + 10):  # paths carry ids: the memo never outgrows its bound
        table.allowed(f"/v1/jobs/{i}")
    assert len(table._memo) <= paths._MEMO
    assert table.allowed("/v1/factor-sets/fs") == first[1][0]


def test_every_404_hint_names_a_route_that_exists(client: Any) -> None:
    routes = {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p, _ in _operations(client.app)}
    named = 0
    for kind, hint in _FIND.items():
        for method, path in re.findall(r"\b(GET|POST|PUT|DELETE) (/\S+)", hint):
            assert (method, re.sub(r"\{[^}]+\}", "{}", path.rstrip(".,;"))) in routes, (kind, hint)
            named += 1
    assert named >= 6
    missing = client.get(f"/v1/assemblies/{uuid.uuid4()}")
    assert missing.status_code == 404 and "POST /v1/assemblies" in missing.json()["detail"]
