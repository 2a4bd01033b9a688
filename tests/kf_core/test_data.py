"""Tests for kf_core.data: the dSprites generator, digits, npz files, image folders and DataSpec."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kf_core.data import (
    ArrayDataset,
    DataSpec,
    dsprites,
    load_dataset,
    load_digits,
    load_dsprites,
    load_image_folder,
    load_npz,
    load_split,
    save_npz,
    split_dataset,
)
from kf_core.errors import ConfigError, DataError, LabelError, UnknownNameError, UnknownTaskError

SQUARE, ELLIPSE, HEART = 0, 1, 2


def _one(shape: int, scale: int = 5, orientation: int = 0, pos_x: int = 16, pos_y: int = 16) -> np.ndarray:
    return dsprites.render(np.array([[shape, scale, orientation, pos_x, pos_y]])).reshape(64, 64)


def _window(img: np.ndarray, pos_x: int = 16, pos_y: int = 16) -> np.ndarray:
    """The 33x33 window centred on the shape's centre pixel, documented as 16 + pos class."""
    r, c = 16 + pos_y, 16 + pos_x
    return img[r - 16 : r + 17, c - 16 : c + 17]


def _moments(img: np.ndarray) -> tuple[float, float, float, float, float]:
    rows, cols = np.nonzero(img)
    cov = np.cov(np.stack([cols, rows]).astype(np.float64))
    return float(cols.mean()), float(rows.mean()), float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])


# --- dSprites: the factor grid -------------------------------------------------------------------------------


def test_grid_sizes_and_class_names() -> None:
    assert dsprites.SIZES == (3, 6, 40, 32, 32)
    assert dsprites.NUM_IMAGES == 737_280
    names = dsprites.class_names()
    assert list(names) == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert [len(v) for v in names.values()] == [3, 6, 40, 32, 32]
    assert names["shape"] == ["square", "ellipse", "heart"]
    assert names["scale"] == ["0.500", "0.600", "0.700", "0.800", "0.900", "1.000"]
    assert names["orientation"][0] == "0.000" and names["orientation"][-1] == f"{2 * math.pi * 39 / 40:.3f}"
    assert names["pos_x"][0] == "0.000" and names["pos_x"][-1] == "1.000"
    assert all(len(set(v)) == len(v) for v in names.values())


@pytest.mark.parametrize(
    ("index", "classes"),
    [
        (0, [0, 0, 0, 0, 0]),
        (737_279, [2, 5, 39, 31, 31]),
        (1, [0, 0, 0, 0, 1]),  # pos_y varies fastest
        (32, [0, 0, 0, 1, 0]),
        (245_760, [1, 0, 0, 0, 0]),  # shape varies slowest: 6 * 40 * 32 * 32 images per shape
        (368_640, [1, 3, 0, 0, 0]),  # 245,760 + 3 * 40,960
        (287_777, [1, 1, 1, 1, 1]),  # 245,760 + 40,960 + 1,024 + 32 + 1
    ],
)
def test_index_to_classes_known_corners(index: int, classes: list[int]) -> None:
    got = dsprites.latent_classes(index)
    assert got.dtype == np.int64 and got.tolist() == [classes]
    assert dsprites.latent_index(got).tolist() == [index]


def test_index_round_trip_everywhere() -> None:
    index = np.random.default_rng(0).integers(0, dsprites.NUM_IMAGES, size=5000)
    assert np.array_equal(dsprites.latent_index(dsprites.latent_classes(index)), index)


def test_latent_values() -> None:
    values = dsprites.latent_values(np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 1, 10, 15, 16]]))
    np.testing.assert_allclose(values[0], [1.0, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(values[1], [3.0, 1.0, 2 * math.pi * 39 / 40, 1.0, 1.0])  # 2 pi excluded
    np.testing.assert_allclose(values[2], [2.0, 0.6, math.pi / 2, 15 / 31, 16 / 31])


def test_out_of_range_classes_and_indices_raise() -> None:
    with pytest.raises(DataError, match="737279"):
        dsprites.latent_classes(737_280)
    with pytest.raises(DataError, match="out of range"):
        dsprites.render(np.array([[0, 6, 0, 0, 0]]))
    with pytest.raises(DataError, match=r"\(N, 5\)"):
        dsprites.render(np.zeros((2, 4), dtype=np.int64))


# --- dSprites: rendering -------------------------------------------------------------------------------------


def test_every_mask_is_binary_nonempty_and_inside_the_frame() -> None:
    shape, scale, orientation = np.meshgrid(range(3), range(6), range(40), indexing="ij")
    base = np.stack([shape.ravel(), scale.ravel(), orientation.ravel()], axis=1)
    for pos_x, pos_y in [(0, 0), (31, 31), (0, 31), (31, 0)]:
        classes = np.concatenate([base, np.tile([pos_x, pos_y], (len(base), 1))], axis=1)
        images = dsprites.render(classes)
        assert images.dtype == np.uint8 and images.shape == (720, 64, 64)
        assert set(np.unique(images).tolist()) == {0, 1}
        assert (images.sum(axis=(1, 2)) > 0).all()
        # Nothing touches the frame's border, so no shape is clipped.
        border = images[:, [0, -1], :].sum() + images[:, :, [0, -1]].sum()
        assert border == 0, f"shapes touch the border at pos ({pos_x}, {pos_y})"


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
@pytest.mark.parametrize("orientation", [0, 7, 23])
def test_area_grows_with_scale(shape: int, orientation: int) -> None:
    areas = [int(_one(shape, s, orientation).sum()) for s in range(6)]
    assert all(a < b for a, b in itertools.pairwise(areas)), areas
    if shape == SQUARE and orientation == 0:
        assert areas[-1] == 23 * 23  # the documented size: 11 pixels a unit, half-side 1


def test_square_is_about_a_third_of_the_image() -> None:
    rows, cols = np.nonzero(_one(SQUARE, 5, 0))
    assert 18 <= cols.max() - cols.min() + 1 <= 26 and 18 <= rows.max() - rows.min() + 1 <= 26


def test_pos_x_moves_right_and_pos_y_moves_down() -> None:
    for shape in (SQUARE, ELLIPSE, HEART):
        cx = [_moments(_one(shape, 3, 4, pos_x=k))[0] for k in range(32)]
        np.testing.assert_allclose(np.diff(cx), 1.0)  # one pixel a position step, shape unchanged
        cy = [_moments(_one(shape, 3, 4, pos_y=k))[1] for k in range(32)]
        np.testing.assert_allclose(np.diff(cy), 1.0)  # pos_y grows downwards (row index)
        assert _moments(_one(shape, 3, 4, pos_x=5))[1] == pytest.approx(_moments(_one(shape, 3, 4))[1])


def test_position_only_translates() -> None:
    a = _window(_one(HEART, 2, 13, pos_x=3, pos_y=29), pos_x=3, pos_y=29)
    b = _window(_one(HEART, 2, 13, pos_x=30, pos_y=0), pos_x=30, pos_y=0)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("scale", [0, 5])
def test_square_rotated_a_quarter_turn_is_unchanged(scale: int) -> None:
    upright = _one(SQUARE, scale, 0)
    assert np.abs(_one(SQUARE, scale, 10).astype(int) - upright).sum() <= 2  # pi / 2 = 10 steps
    assert np.abs(_one(SQUARE, scale, 20).astype(int) - upright).sum() <= 2
    assert np.abs(_one(SQUARE, scale, 5).astype(int) - upright).sum() > 20  # pi / 4 really rotates


def test_heart_is_left_right_symmetric_with_lobes_up() -> None:
    heart = _window(_one(HEART, 5, 0))
    assert np.abs(heart.astype(int) - heart[:, ::-1]).sum() <= 2
    assert np.abs(heart.astype(int) - heart[::-1, :]).sum() > 0.1 * heart.sum()
    top, bottom = heart[:16].sum(), heart[17:].sum()
    assert top > bottom  # lobes (most of the mass) up, point down


def test_heart_half_turn_points_up() -> None:
    upright, turned = _window(_one(HEART, 4, 0)), _window(_one(HEART, 4, 20))
    assert np.abs(turned.astype(int) - upright[::-1, ::-1]).sum() <= 2
    assert turned[:16].sum() < turned[17:].sum()


def test_ellipse_long_axis_rotates_counter_clockwise() -> None:
    _, _, var_x, var_y, _ = _moments(_one(ELLIPSE, 5, 0))
    assert var_x > 3 * var_y  # long axis along x at orientation 0
    _, _, var_x, var_y, _ = _moments(_one(ELLIPSE, 5, 10))
    assert var_y > 3 * var_x  # a quarter turn: long axis vertical
    _, _, _, _, cov = _moments(_one(ELLIPSE, 5, 5))
    assert cov < 0  # 45 degrees counter-clockwise: up-right, so the row shrinks as the column grows
    _, _, _, _, cov = _moments(_one(ELLIPSE, 5, 15))
    assert cov > 0


# --- dSprites: the dataset -----------------------------------------------------------------------------------


def test_seeded_subset_is_reproducible_and_matches_render() -> None:
    a, b, c = (load_dsprites(samples=300, seed=s) for s in (1, 1, 2))
    assert a.x.dtype == np.uint8 and a.x.shape == (300, 1, 64, 64) and (a.scale, a.shift) == (2.0, -1.0)
    assert np.array_equal(a.x, b.x) and all(np.array_equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert not np.array_equal(a.labels["pos_y"], c.labels["pos_y"])
    classes = np.stack([a.labels[f] for f in dsprites.FACTORS], axis=1)
    index = dsprites.latent_index(classes)
    assert (np.diff(index) > 0).all()  # sorted, without replacement
    assert np.array_equal(a.x[:, 0], dsprites.render(classes))
    assert set(np.unique(a.images()).tolist()) == {-1.0, 1.0}  # mean 0.5, std 0.5 normalisation
    assert a.meta == {"source": "dsprites", "generator": dsprites.GENERATOR_VERSION, "samples": 300, "seed": 1}
    assert a.num_classes("orientation") == 40


@pytest.mark.parametrize("samples", [0, -3, 737_281, True])
def test_bad_sample_counts_raise(samples: int) -> None:
    with pytest.raises(ConfigError, match="samples"):
        load_dsprites(samples=samples)


def test_split_is_seeded_70_30() -> None:
    ds = load_dsprites(samples=1000, seed=0)
    split, again, other = (split_dataset(ds, seed=s) for s in (42, 42, 7))
    assert (len(split.train), len(split.test)) == (700, 300)

    def index(part: ArrayDataset) -> np.ndarray:
        return dsprites.latent_index(np.stack([part.labels[f] for f in dsprites.FACTORS], axis=1))

    assert np.array_equal(index(split.test), index(again.test))
    assert not np.array_equal(index(split.test), index(other.test))
    assert np.array_equal(np.sort(np.concatenate([index(split.train), index(split.test)])), index(ds))


# --- digits --------------------------------------------------------------------------------------------------


def test_digits() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    ds = load_digits()
    raw = sklearn_digits().images
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == np.float32
    assert ds.classes == {"digit": [str(d) for d in range(10)]}
    assert sorted(np.unique(ds.labels["digit"]).tolist()) == list(range(10))
    np.testing.assert_allclose(ds.images()[:, 0], raw / 16 * 2 - 1, atol=1e-6)
    assert ds.images().min() == -1.0 and ds.images().max() == 1.0
    sub, again = load_digits(samples=100, seed=3), load_digits(samples=100, seed=3)
    assert len(sub) == 100 and np.array_equal(sub.x, again.x)
    assert not np.array_equal(sub.x, load_digits(samples=100, seed=4).x)
    with pytest.raises(ConfigError, match="1797"):
        load_digits(samples=5000)


# --- npz -----------------------------------------------------------------------------------------------------


def _write(path: Path, **arrays: object) -> Path:
    with path.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


def _good(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.integers(0, 256, size=(n, 5, 4), dtype=np.uint8),
        "colour": np.arange(n) % 3,
        "size": np.arange(n) % 2,
    }


def test_npz_uint8_pixels_map_to_minus_one_to_one(tmp_path: Path) -> None:
    arrays = _good()
    arrays["x"][0, 0, 0], arrays["x"][0, 0, 1] = 0, 255
    ds = load_npz(_write(tmp_path / "d.npz", **arrays, classes_colour=np.array(["red", "green", "blue"])))
    assert ds.x.shape == (6, 1, 5, 4) and ds.x.dtype == np.uint8
    np.testing.assert_allclose(ds.images(), arrays["x"][:, None] / 255 * 2 - 1, atol=1e-6)
    assert ds.images()[0, 0, 0, 0] == -1.0 and ds.images()[0, 0, 0, 1] == pytest.approx(1.0)
    assert ds.classes == {"colour": ["red", "green", "blue"], "size": ["0", "1"]}  # default names 0..max
    assert ds.name == "d" and ds.meta["source"] == "npz"


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    original = ArrayDataset(
        x=rng.integers(0, 256, size=(7, 3, 4, 4), dtype=np.uint8),
        labels={"a": rng.integers(0, 5, 7), "b": np.arange(7) % 2},
        classes={"a": list("vwxyz"), "b": ["no", "yes"]},
        scale=2 / 255,
        shift=-1.0,
    )
    back = load_npz(save_npz(original, tmp_path / "no_suffix"))
    assert np.array_equal(back.x, original.x)
    assert back.labels.keys() == original.labels.keys()
    assert all(np.array_equal(back.labels[k], original.labels[k]) for k in original.labels)
    assert back.classes == original.classes  # including class names that no label uses


def test_npz_round_trip_keeps_dsprites_compact(tmp_path: Path) -> None:
    ds = load_dsprites(samples=50, seed=0)
    path = save_npz(ds, tmp_path / "ds.npz")
    with np.load(path, allow_pickle=False) as raw:
        assert raw["x"].dtype == np.uint8 and set(np.unique(raw["x"]).tolist()) == {0, 255}
    back = load_npz(path)
    np.testing.assert_allclose(back.images(), ds.images(), atol=1e-6)
    assert back.classes == ds.classes


def test_npz_round_trip_float_images(tmp_path: Path) -> None:
    ds = load_digits(samples=20, seed=0)
    back = load_npz(save_npz(ds, tmp_path / "digits.npz"))
    assert back.x.dtype == np.float32 and np.array_equal(back.images(), ds.images())
    assert np.array_equal(back.labels["digit"], ds.labels["digit"]) and back.classes == ds.classes


def test_npz_labels_selects_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.npz", **_good())
    assert list(load_npz(path, labels=["size"]).labels) == ["size"]
    with pytest.raises(UnknownTaskError, match=r"'shape'.*colour, size") as info:
        load_npz(path, labels=["size", "shape"])
    assert isinstance(info.value, UnknownNameError) and info.value.known == ["colour", "size"]
    with pytest.raises(DataError, match="labels= is empty"):
        load_npz(path, labels=[])


def _case(tmp_path: Path, name: str) -> Path:
    good = _good()
    path = tmp_path / "case.npz"
    if name == "missing":
        return tmp_path / "nope.npz"
    if name == "folder":
        return tmp_path
    if name == "garbage":
        path.write_text("not a zip archive")
        return path
    if name == "npy":
        np.save(path.open("wb"), good["x"])
        return path
    changes: dict[str, dict[str, object]] = {
        "pickled": {"meta": np.array([{"a": 1}], dtype=object)},
        "no_x": {"x": None},
        "x_1d": {"x": np.zeros(6, dtype=np.uint8)},
        "x_int64": {"x": np.zeros((6, 5, 4), dtype=np.int64)},
        "short": {"size": np.zeros(4, dtype=np.int64)},
        "float_labels": {"size": np.zeros(6)},
        "negative": {"size": np.array([0, 1, -1, 0, 1, 0])},
        "no_labels": {"colour": None, "size": None},
        "orphan_names": {"classes_shape": np.array(["a", "b"])},
        "few_names": {"classes_colour": np.array(["red", "green"])},
    }
    arrays = {**good, **changes[name]}
    return _write(path, **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("missing", DataError, "nope.npz: no such file"),
        ("folder", DataError, "no such file"),
        ("garbage", DataError, "not an .npz archive"),
        ("npy", DataError, "single .npy array"),
        ("pickled", DataError, "'meta' holds pickled Python objects"),
        ("no_x", DataError, r"no array named 'x' \(found: colour, size\)"),
        ("x_1d", DataError, r"\(N, \*sample_shape\), e.g. \(N, D\) vectors .* got shape \(6,\)"),
        ("x_int64", DataError, "uint8 pixels or floats, got dtype int64"),
        ("short", LabelError, "'size' has length 4 .* N=6"),
        ("float_labels", LabelError, "'size' must hold integers, got dtype float64"),
        ("negative", LabelError, "'size' has negative values"),
        ("no_labels", DataError, "no label arrays besides x"),
        ("orphan_names", DataError, "classes_shape names classes but there is no label array 'shape'"),
        ("few_names", LabelError, "goes up to 2 but classes_colour names only 2 classes"),
    ],
)
def test_npz_errors_say_what_to_fix(tmp_path: Path, case: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        load_npz(_case(tmp_path, case))
    if error is DataError:  # the right type, not a subclass that happens to match
        assert type(info.value) is DataError


def test_save_npz_refuses_reserved_column_names(tmp_path: Path) -> None:
    ds = ArrayDataset(x=np.zeros((2, 1, 2, 2), np.float32), labels={"x": np.zeros(2, np.int64)}, classes={"x": ["0"]})
    with pytest.raises(DataError, match="reserved"):
        save_npz(ds, tmp_path / "bad.npz")


# --- image folders -------------------------------------------------------------------------------------------


def _image_folder(root: Path) -> Path:
    for name, colours in {"dog": [(255, 255, 255), (0, 0, 0), (255, 0, 0)], "cat": [(0, 0, 255), (9, 9, 9)]}.items():
        (root / name).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (10 + i, 7), colour).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    return root


def test_image_folder(tmp_path: Path) -> None:
    ds = load_image_folder(_image_folder(tmp_path / "pets"), image_size=(4, 6), label="animal")
    assert ds.x.shape == (5, 3, 4, 6) and ds.x.dtype == np.uint8
    assert ds.classes == {"animal": ["cat", "dog"]}  # sorted folder names
    assert ds.labels["animal"].tolist() == [0, 0, 1, 1, 1]
    images = ds.images()
    np.testing.assert_allclose(images[0, :, 0, 0], [-1, -1, 1], atol=1e-6)  # cat/0.png is blue
    np.testing.assert_allclose(images[2], 1.0, atol=1e-6)  # dog/0.png is white
    np.testing.assert_allclose(images[3], -1.0, atol=1e-6)  # dog/1.png is black
    grey = load_image_folder(tmp_path / "pets", image_size=(3, 3), channels=1)
    assert grey.x.shape == (5, 1, 3, 3) and list(grey.labels) == ["label"]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "absent", image_size=(4, 4))
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="is not a folder"):
        load_image_folder(tmp_path / "file.png", image_size=(4, 4))
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_image_folder(tmp_path / "empty_root", image_size=(4, 4))
    root = _image_folder(tmp_path / "pets")
    (root / "bird").mkdir()
    (root / "bird" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*bird holds no images"):
        load_image_folder(root, image_size=(4, 4))
    (root / "bird" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*bird/broken\.png"):
        load_image_folder(root, image_size=(4, 4))
    with pytest.raises(ConfigError, match="channels"):
        load_image_folder(root, image_size=(4, 4), channels=2)
    with pytest.raises(ConfigError, match="image_size"):
        load_image_folder(root, image_size=(0, 4))


# --- DataSpec ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        DataSpec(source="dsprites", samples=1000, seed=3),
        DataSpec(source="npz", path="/data/shapes.npz", labels=("a", "b"), test_fraction=0.2, split_seed=1),
        DataSpec(source="folder", path="/data/pets", image_size=(32, 24), channels=1),
    ],
)
def test_data_spec_json_round_trip(spec: DataSpec) -> None:
    data = spec.to_json()
    assert json.loads(json.dumps(data)) == data  # already plain JSON types (lists, not tuples)
    back = DataSpec.from_json(json.loads(json.dumps(data)))
    assert back == spec and hash(back) == hash(spec)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "mnist"}, "unknown data source 'mnist'; known sources: dsprites, digits, breast_cancer, npz, fold"),
        ({"source": "npz"}, "'npz' needs a path"),
        ({"source": "folder", "path": "/x"}, "needs image_size"),
        ({"source": "digits", "samples": 0}, "samples must be a positive integer"),
        ({"source": "digits", "test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
        ({"source": "digits", "seed": "1"}, "seed must be an integer"),
        ({"source": "folder", "path": "/x", "image_size": [3]}, r"image_size must be \(height, width\)"),
        ({"source": "npz", "path": "/x.npz", "labels": "digit"}, "labels must be a list"),
        ({"source": "digits", "sample": 10}, "unknown data spec field.*sample; known fields"),
        ({"path": "/x.npz"}, "needs a 'source'"),
    ],
)
def test_bad_data_specs_raise_config_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DataSpec.from_json(fields)


def test_load_split_builtin() -> None:
    spec = DataSpec(source="digits", samples=200, seed=5)
    split, again = load_split(spec), load_split(spec)
    assert (len(split.train), len(split.test)) == (140, 60)
    assert np.array_equal(split.test.x, again.test.x)
    assert split.train.meta["spec"] == spec.to_json()
    other = load_split(DataSpec(source="digits", samples=200, seed=5, split_seed=6))
    assert not np.array_equal(split.test.x, other.test.x)
    ds = load_dataset(DataSpec(source="dsprites", samples=40, seed=9))
    assert np.array_equal(ds.x, load_dsprites(samples=40, seed=9).x)


def test_load_split_from_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.npz", **_good(20))
    split = load_split(DataSpec(source="npz", path=str(path), labels=("size",), test_fraction=0.25))
    assert (len(split.train), len(split.test)) == (15, 5) and list(split.train.labels) == ["size"]
    sub = load_dataset(DataSpec(source="npz", path=str(path), samples=8, seed=1))
    assert len(sub) == 8 and np.array_equal(
        sub.x, load_dataset(DataSpec(source="npz", path=str(path), samples=8, seed=1)).x
    )
    with pytest.raises(ConfigError, match="only 20"):
        load_dataset(DataSpec(source="npz", path=str(path), samples=21))
    root = _image_folder(tmp_path / "pets")
    folder = load_split(DataSpec(source="folder", path=str(root), image_size=(5, 5), test_fraction=0.4))
    assert (len(folder.train), len(folder.test)) == (3, 2) and folder.train.input_shape == (3, 5, 5)
