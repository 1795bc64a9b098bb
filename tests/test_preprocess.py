"""preprocess: exactly the seed's transform, checked before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import tasks.preprocess as preprocess_module
from tasks.config import ARRAY_NAMES
from tasks.io import load_arrays, save_arrays
from tasks.preprocess import preprocess, preprocess_arrays, scale_images
from tasks.stage import StageError
from tests.conftest import raw_params, snapshot


def test_scale_images_known_values():
    images = np.array([[[0, 51, 255] + [0] * 25] * 28], dtype=np.uint8)
    out = scale_images(images)
    assert out.shape == (1, 28, 28, 1)
    assert out.dtype == np.float32
    assert out[0, 0, :3, 0].tolist() == [0.0, np.float32(0.2), 1.0]


def test_scale_images_is_the_seeds_transform_bit_for_bit(arrays):
    seed = arrays["x_train"].reshape(-1, 28, 28, 1).astype("float32") / 255.0
    out = scale_images(arrays["x_train"])
    assert out.dtype == seed.dtype
    assert out.tobytes() == seed.tobytes()


def test_preprocess_arrays(arrays):
    out = preprocess_arrays(arrays)
    assert {n: out[n].shape for n in ARRAY_NAMES} == {
        "x_train": (50, 28, 28, 1),
        "y_train": (50,),
        "x_test": (20, 28, 28, 1),
        "y_test": (20,),
    }
    for name in ("x_train", "x_test"):
        assert out[name].dtype == np.float32
        assert out[name].min() >= 0.0 and out[name].max() <= 1.0
    for name in ("y_train", "y_test"):
        assert out[name].dtype == np.uint8
        np.testing.assert_array_equal(out[name], arrays[name])


def test_scale_that_leaves_unit_range_is_refused(arrays):
    with pytest.raises(StageError) as err:
        preprocess_arrays(arrays, scale=100.0)
    message = str(err.value)
    assert message.startswith("processed data failed 2 check(s); nothing written:")
    assert "x_train: check 'unit_range' failed in" in message
    assert "x_test: check 'unit_range' failed in" in message


def test_failing_sample_indices_are_named(arrays):
    x = np.zeros((5, 28, 28), np.uint8)
    x[3, 1, 1] = 200
    with pytest.raises(
        StageError, match=r"x_test: check 'unit_range' failed in 1 value\(s\); first failing samples \[3\]"
    ):
        preprocess_arrays({**arrays, "x_test": x}, scale=150.0)


def test_stage_writes_processed(project, arrays, params):
    save_arrays(Path("data/raw"), arrays)
    preprocess(params)
    out = load_arrays(Path("data/processed"), ARRAY_NAMES)
    assert out["x_train"].shape == (50, 28, 28, 1) and out["x_train"].dtype == np.float32
    np.testing.assert_array_equal(out["x_test"], arrays["x_test"][..., None] / np.float32(255))
    np.testing.assert_array_equal(out["y_train"], arrays["y_train"])
    assert sorted(p.name for p in Path("data").iterdir()) == ["processed", "raw"]


def test_failure_leaves_previous_output_intact(project, arrays, params, make_params):
    save_arrays(Path("data/raw"), arrays)
    preprocess(params)
    before = snapshot(project / "data")
    with pytest.raises(StageError, match="nothing written"):
        preprocess(make_params(preprocess={"scale": 10.0}))
    assert snapshot(project / "data") == before


def test_stage_command(project, arrays, capsys):
    save_arrays(Path("data/raw"), arrays)
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays, preprocess={"scale": 2.0})))
    assert preprocess_module.main() == 1
    assert "[preprocess] FAILED: processed data failed" in capsys.readouterr().err
    assert not Path("data/processed").exists()
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays)))
    assert preprocess_module.main() == 0
    assert Path("data/processed/x_test.npy").is_file()
