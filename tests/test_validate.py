"""validate: the raw schema over all four arrays, its report, and failing closed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import tasks.validate as validate_module
from tasks.io import save_arrays
from tasks.stage import StageError
from tasks.validate import build_report, class_counts, pixel_stats, validate, validate_raw
from tests.conftest import raw_params, snapshot


@pytest.fixture
def raw_on_disk(project, arrays) -> Path:
    save_arrays(Path("data/raw"), arrays)
    return project


def test_sound_data_passes(arrays):
    assert validate_raw(arrays, 50, 20) == []


def test_sizes_come_from_params(arrays):
    failures = validate_raw(arrays, 60000, 10000)
    assert [(f.array, f.check, f.message) for f in failures] == [
        ("x_train", "sizes", "expected size sample=60000, got 50"),
        ("y_train", "sizes", "expected size sample=60000, got 50"),
        ("x_test", "sizes", "expected size sample=10000, got 20"),
        ("y_test", "sizes", "expected size sample=10000, got 20"),
    ]


def test_failures_over_several_arrays_are_all_reported(arrays):
    bad = {k: v.copy() for k, v in arrays.items()}
    bad["y_test"][[3, 8]] = 10
    bad["x_train"] = bad["x_train"][:, :, :27]
    failures = validate_raw(bad, 50, 20)
    assert [(f.array, f.check) for f in failures] == [("x_train", "sizes"), ("y_test", "label_range")]
    assert failures[1].samples == (3, 8)


def test_class_counts(arrays):
    assert class_counts(arrays["y_train"]) == {str(k): 5 for k in range(10)}
    assert class_counts(np.array([0, 0, 3], np.uint8)) == {
        "0": 2,
        "1": 0,
        "2": 0,
        "3": 1,
        **{str(k): 0 for k in range(4, 10)},
    }


def test_pixel_stats_hand_made():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 0, :2] = 255  # two full pixels out of 1568
    stats = pixel_stats(images)
    p = 2 / 1568
    assert stats == {"mean": round(p, 6), "std": round(float(np.sqrt(p * (1 - p))), 6), "min": 0, "max": 255}


def test_pixel_stats_chunked_equals_numpy(arrays, monkeypatch):
    monkeypatch.setattr(validate_module, "ROWS_PER_CHUNK", 7)
    scaled = arrays["x_train"].astype(np.float64) / 255.0
    stats = pixel_stats(arrays["x_train"])
    assert stats["mean"] == pytest.approx(scaled.mean(), abs=1e-6)
    assert stats["std"] == pytest.approx(scaled.std(), abs=1e-6)
    assert (stats["min"], stats["max"]) == (int(arrays["x_train"].min()), int(arrays["x_train"].max()))


def test_build_report(arrays):
    report = build_report(arrays)
    assert report["passed"] is True
    assert report["samples"] == {"train": 50, "test": 20}
    assert report["class_counts"]["test"] == {str(k): 2 for k in range(10)}
    assert set(report["pixels"]) == {"train", "test"}
    json.dumps(report)  # plain JSON, no numpy scalars


def test_stage_writes_report(raw_on_disk, params, arrays):
    report = validate(params)
    assert json.loads(Path("reports/validation.json").read_text()) == report
    assert report["class_counts"]["train"] == {str(k): 5 for k in range(10)}


@pytest.mark.parametrize(
    ("name", "mangle", "expected"),
    [
        (
            "y_train",
            lambda a: np.where(np.arange(50) % 13 == 1, 10, a).astype(np.uint8),
            "y_train: check 'label_range' failed in 4 value(s); first failing samples [1, 14, 27, 40]",
        ),
        (
            "y_test",
            lambda a: np.where(a == 7, 0, a).astype(np.uint8),
            "y_test: check 'all_classes_present' failed: missing classes [7]",
        ),
        ("x_test", lambda a: a[:, :, :27].copy(), "x_test: check 'sizes' failed: expected size col=28, got 27"),
        ("x_train", lambda a: a.reshape(50, 784), "x_train: check 'dims' failed: expected 3 dims"),
        ("x_train", lambda a: a.astype(np.float32), "x_train: check 'dtype(<class 'numpy.uint8'>)' failed"),
    ],
    ids=["labels-out-of-range", "missing-class", "wrong-size", "wrong-dims", "wrong-dtype"],
)
def test_bad_raw_data_fails_closed(project, arrays, params, name, mangle, expected):
    save_arrays(Path("data/raw"), {**arrays, name: mangle(arrays[name])})
    with pytest.raises(StageError) as err:
        validate(params)
    assert str(err.value).startswith("raw data failed 1 check(s):")
    assert expected in str(err.value)
    assert not Path("reports").exists()


def test_failure_keeps_previous_report(raw_on_disk, params, arrays):
    validate(params)
    before = snapshot(raw_on_disk / "reports")
    labels = arrays["y_test"].copy()
    labels[0] = 99
    save_arrays(Path("data/raw"), {**arrays, "y_test": labels})
    with pytest.raises(StageError, match="label_range"):
        validate(params)
    assert snapshot(raw_on_disk / "reports") == before


def test_max_failing_indices_from_params(project, arrays, make_params):
    save_arrays(Path("data/raw"), {**arrays, "y_train": np.full(50, 200, np.uint8)})
    with pytest.raises(StageError) as err:
        validate(make_params(validate={"max_failing_indices": 3}))
    assert "failed in 50 value(s); first failing samples [0, 1, 2]:" in str(err.value)


def test_stage_command(raw_on_disk, arrays, capsys):
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays)))
    assert validate_module.main() == 0
    assert Path("reports/validation.json").is_file()
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays, validate={"test_size": 21})))
    assert validate_module.main() == 1
    assert "[validate] FAILED: raw data failed 2 check(s)" in capsys.readouterr().err


def test_missing_raw_data_is_explained(project, params):
    with pytest.raises(FileNotFoundError, match=r"data/raw/x_train\.npy is missing: run the stage that produces it"):
        validate(params)
