"""Any teacher, any input (issue 12) over HTTP: a vector teacher made by a converter, vector data as npz or tables.

Acceptance 1: scikit-learn's MLPClassifier on the bundled digits, converted with skl2onnx and uploaded unmodified
(input ``X`` [N, 64], outputs ``label`` and ``probabilities``), factorized on [N, 64] data into the class-group
tasks low (0-4) and high (5-9), assembled with the combined classifier and served over /v1 and v2: the combined
accuracy on held-out digits the teacher never saw is within 1.5 points of the sklearn teacher's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import open_client
from tests.factories import SklearnDigits, sklearn_digits_teacher
from tests.service.helpers import Backend, upload_teacher, watch

GROUPS = [
    {"name": "low", "output": "probabilities", "classes": [0, 1, 2, 3, 4]},
    {"name": "high", "output": "probabilities", "classes": [5, 6, 7, 8, 9]},
]


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _upload_dataset(client: Any, name: str, filename: str, content: bytes, **spec: Any) -> Any:
    return client.post(
        "/v1/datasets", files={"file": (filename, content)}, data={"spec": json.dumps({"name": name, **spec})}
    )


@pytest.fixture(scope="module")
def sk_digits(tmp_path_factory: pytest.TempPathFactory) -> SklearnDigits:
    return sklearn_digits_teacher(tmp_path_factory.mktemp("sk") / "digits_mlp.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite-inline"], indirect=True)
def test_skl2onnx_digits_teacher_end_to_end_over_http(backend: Backend, sk_digits: SklearnDigits) -> None:
    sk = sk_digits
    with open_client(backend.settings) as client:
        r = upload_teacher(client, sk.path, {"name": "sk-digits", "tasks": GROUPS})
        assert r.status_code == 201, r.text
        teacher = r.json()
        assert teacher["input_shape"] == [64]
        assert teacher["outputs"] == {"probabilities": "probabilities"}  # label (int64) is not a task output
        assert teacher["output_sizes"] == {"probabilities": 10}

        # The label array is named after the teacher output the tasks read.
        r = _upload_dataset(client, "digits-vectors", "d.npz", _npz(x=sk.x_train, probabilities=sk.y_train))
        assert r.status_code == 201, r.text
        dataset = r.json()
        assert dataset["input_shape"] == [64] and dataset["num_samples"] == len(sk.x_train)

        job = {"teacher_id": teacher["id"], "dataset_id": dataset["id"], "recipe": "digits", "name": "sk-digits"}
        r = client.post("/v1/jobs", json=job)
        assert r.status_code == 202, r.text
        states = watch(client, r.json()["id"], timeout=300, backend=backend)
        assert states[-1]["status"] == "succeeded", states[-1]["error"]
        fs = client.get(f"/v1/factor-sets/{states[-1]['factor_set_id']}").json()
        assert fs["input_spec"]["shape"] == [None, 64]

        r = client.post("/v1/assemblies", json={"factor_set": "sk-digits", "tasks": ["low", "high"], "combined": True})
        assert r.status_code == 200, r.text
        assert r.json()["input"]["shape"] == [-1, 64]

        labels: list[int] = []
        names: list[str] = []
        for start in range(0, len(sk.x_test), 64):  # KF_MAX_BATCH
            batch = sk.x_test[start : start + 64]
            r = client.post("/v1/predict", json={"factor_set": "sk-digits", "inputs": batch.tolist(), "combined": True})
            assert r.status_code == 200, r.text
            labels += r.json()["predictions"]["combined"]["labels"]
            names += r.json()["predictions"]["combined"]["class_names"]
        predicted = np.array([int(name) for name in names])
        accuracy = float((predicted == sk.y_test).mean())
        print(
            f"combined accuracy {accuracy:.4f}, sklearn teacher {sk.accuracy:.4f} on {len(sk.y_test)} held-out digits"
        )
        assert accuracy >= sk.accuracy - 0.015, (accuracy, sk.accuracy)

        meta = client.get("/v2/models/sk-digits").json()
        assert meta["inputs"][0]["shape"] == [-1, 64]
        x = sk.x_test[:64]
        infer = {
            "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": "label_combined"}, {"name": "probs_combined"}],
        }
        r = client.post("/v2/models/sk-digits/infer", json=infer)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(r.json()["outputs"][0]["data"], labels[:64])
        probs = np.asarray(r.json()["outputs"][1]["data"]).reshape(64, 10)
        for i in range(3):  # one row alone (a lone client's batch, run without the batch bookkeeping): the same
            one = {**infer, "inputs": [{**infer["inputs"][0], "shape": [1, 64], "data": x[i].tolist()}]}
            r = client.post("/v2/models/sk-digits/infer", json=one)
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == [labels[i]]
            np.testing.assert_allclose(r.json()["outputs"][1]["data"], probs[i], atol=1e-6)

        # Images sent to the vector factor set: a 4xx naming both shapes.
        r = client.post("/v1/predict", json={"factor_set": "sk-digits", "inputs": np.zeros((1, 1, 8, 8)).tolist()})
        assert r.status_code == 422 and "64" in r.text, r.text


def test_vector_teacher_and_image_dataset_do_not_fit(client: Any, sk_digits: SklearnDigits) -> None:
    r = upload_teacher(client, sk_digits.path, {"name": "sk-digits", "tasks": GROUPS})
    assert r.status_code == 201, r.text
    r = client.post("/v1/jobs", json={"teacher_id": r.json()["id"], "dataset": "digits"})
    assert r.status_code == 422
    assert "teacher 'sk-digits' takes inputs of shape (64,) (a vector) per sample" in r.json()["detail"]
    assert "(1, 8, 8) (C, H, W)" in r.json()["detail"]


def test_a_job_on_uploaded_vectors_without_a_recipe_runs_the_tabular_recipe(
    client: Any, sk_digits: SklearnDigits
) -> None:
    teacher = upload_teacher(client, sk_digits.path, {"name": "sk-digits", "tasks": GROUPS})
    assert teacher.status_code == 201, teacher.text
    x = np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32)
    labels = np.arange(40) % 10
    ds = _upload_dataset(client, "vectors", "v.npz", _npz(x=x, probabilities=labels))
    assert ds.status_code == 201 and ds.json()["input_shape"] == [64], ds.text
    r = client.post("/v1/jobs", json={"teacher_id": teacher.json()["id"], "dataset_id": ds.json()["id"]})
    assert r.status_code == 202, r.text
    recipe = r.json()["recipe"]
    assert recipe["name"] == "tabular" and recipe["factor"]["ckn"]["name"] == "mlp", recipe
    assert [t["name"] for t in recipe["tasks"]] == ["low", "high"]  # the teacher's tasks, not the recipe's
    assert recipe["data"]["source"] == "npz"


def _table() -> dict[str, list[Any]]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.normal(size=12).round(4).tolist(),
        "b": rng.normal(size=12).round(4).tolist(),
        "diagnosis": ["benign", "malignant"] * 6,
        "c": list(range(12)),
    }


def test_csv_and_parquet_uploads_become_vector_datasets(client: Any, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _table()
    csv = ",".join(table) + "\n" + "\n".join(",".join(str(v[i]) for v in table.values()) for i in range(12))
    pq.write_table(pa.table(table), tmp_path / "t.parquet")
    for name, filename, content in (
        ("from-csv", "cancer.csv", csv.encode()),
        ("from-parquet", "upload.bin", (tmp_path / "t.parquet").read_bytes()),  # Parquet is known by its bytes
    ):
        r = _upload_dataset(client, name, filename, content, labels=["diagnosis"])
        assert r.status_code == 201, r.text
        ds = r.json()
        assert ds["input_shape"] == [3] and ds["num_samples"] == 12, ds
        assert ds["classes"] == {"diagnosis": ["benign", "malignant"]}
        assert ds["artifact"]["media_type"] == "application/x-npz"
        # What is stored is the .npz jobs read: x (N, 3) in table order, the labels as class indices.
        stored = np.load(io.BytesIO(client.get(ds["artifact"]["url"]).content))
        np.testing.assert_allclose(stored["x"][:, 0], table["a"], rtol=1e-6)
        np.testing.assert_array_equal(stored["x"][:, 2], table["c"])
        np.testing.assert_array_equal(stored["diagnosis"], [0, 1] * 6)


@pytest.mark.parametrize(
    ("filename", "content", "spec", "status", "message"),
    [
        ("t.csv", b"a,y\n1,0\n", {}, 422, "a csv table needs 'labels' in its spec"),
        ("t.csv", b"a,y\n1,0\n", {"labels": ["z"]}, 422, "table has no column(s) ['z'] to use as labels"),
        ("t.csv", b"a,y\nx1,0\n", {"labels": ["y"]}, 422, "feature column 'a' holds 'x1', which is not a number"),
        ("t.csv", b"a,y\n1,0\n2\n", {"labels": ["y"]}, 422, "CSV line 3 has 1 fields but the header has 2"),
        ("t.csv", b"\xff\xfe\x00garbage", {"labels": ["y"]}, 422, "the CSV file cannot be read"),
        ("t.parquet", b"PAR1 truncated", {"labels": ["y"]}, 422, "the Parquet file cannot be read"),
        (
            "t.xlsx",
            b"not a table",
            {"labels": ["y"]},
            422,
            "or upload a table as a .csv (with a header row) or .parquet",
        ),
    ],
)
def test_bad_tables_are_refused_with_what_to_fix(
    client: Any, filename: str, content: bytes, spec: dict[str, Any], status: int, message: str
) -> None:
    r = _upload_dataset(client, "bad", filename, content, **spec)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert "/tmp" not in r.text and ".upload" not in r.text  # never a server path or temp name
    assert client.get("/v1/datasets").json()["count"] == 0
