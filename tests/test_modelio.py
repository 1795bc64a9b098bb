"""Model files: byte-reproducible saves, safe-mode loads that refuse what they should."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from tasks.modelio import ZIP_EPOCH, load_model, normalize_keras_archive, renumber_shared_objects, save_model
from tasks.stage import StageError


def test_renumber_shared_objects_keeps_sharing():
    config = {
        "a": {"shared_object_id": 140234, "x": [{"shared_object_id": 99}, {"shared_object_id": 140234}]},
        "b": [1, "s", {"shared_object_id": 99, "shared": True}],
        "shared_object_id": "not-an-int",
    }
    assert renumber_shared_objects(config) == {
        "a": {"shared_object_id": 1, "x": [{"shared_object_id": 2}, {"shared_object_id": 1}]},
        "b": [1, "s", {"shared_object_id": 2, "shared": True}],
        "shared_object_id": "not-an-int",
    }


def test_normalize_strips_dates_and_times():
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            zipfile.ZipInfo("metadata.json", (2024, 5, 6, 7, 8, 10)), '{"keras_version": "3", "date_saved": "now"}'
        )
        z.writestr(zipfile.ZipInfo("config.json", (2024, 5, 6, 7, 8, 10)), '{"shared_object_id": 123456}')
        z.writestr(zipfile.ZipInfo("model.weights.h5", (2024, 5, 6, 7, 8, 10)), b"\x89HDF")
    out = normalize_keras_archive(raw.getvalue())
    with zipfile.ZipFile(io.BytesIO(out)) as z:
        assert [i.filename for i in z.infolist()] == ["metadata.json", "config.json", "model.weights.h5"]
        assert {i.date_time for i in z.infolist()} == {ZIP_EPOCH}
        assert json.loads(z.read("metadata.json")) == {"keras_version": "3"}
        assert json.loads(z.read("config.json")) == {"shared_object_id": 1}
        assert z.read("model.weights.h5") == b"\x89HDF"
    assert normalize_keras_archive(out) == out


def test_saving_the_same_model_twice_gives_the_same_bytes(model_file, tmp_path):
    model = load_model(model_file)
    save_model(model, tmp_path / "again.keras")
    save_model(model, tmp_path / "once-more.keras")
    assert (tmp_path / "again.keras").read_bytes() == (tmp_path / "once-more.keras").read_bytes()
    with zipfile.ZipFile(model_file) as z:
        assert {i.date_time for i in z.infolist()} == {ZIP_EPOCH}
        assert "date_saved" not in json.loads(z.read("metadata.json"))


def test_load_round_trip(model_file, processed):
    import keras

    model = load_model(model_file, input_shape=(28, 28, 1))
    reference = keras.saving.load_model(model_file)
    x = processed["x_test"][:5]
    np.testing.assert_array_equal(model.predict(x, verbose=0), reference.predict(x, verbose=0))
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "Dropout", "Dense"]


def test_load_missing_file(tmp_path):
    with pytest.raises(StageError, match=r"model.keras is missing: run the train stage first"):
        load_model(tmp_path / "model.keras")


def test_load_refuses_non_zip(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"\x89HDF\r\n\x1a\n not a zip")
    with pytest.raises(StageError, match=r"model.keras is not a Keras model \(.keras files are zip archives\)"):
        load_model(path)


def test_load_refuses_zip_that_is_no_model(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(StageError, match=r"refused to load in safe mode: .*config\.json"):
        load_model(path)


def test_load_refuses_lambda_layer_in_safe_mode(tmp_path):
    import keras

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(10)]
    )
    path = tmp_path / "lambda.keras"
    save_model(model, path)
    with pytest.raises(StageError) as err:
        load_model(path)
    assert f"{path}: refused to load in safe mode" in str(err.value)
    assert "Lambda" in str(err.value)


def test_load_refuses_input_shape_mismatch(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((14, 14, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "small.keras"
    save_model(model, path)
    with pytest.raises(StageError) as err:
        load_model(path, input_shape=(28, 28, 1))
    assert str(err.value).startswith(
        f"{path} expects inputs of shape (14, 14, 1), but the processed data has (28, 28, 1): retrain the model"
    )
    assert load_model(path, input_shape=(14, 14, 1)).input_shape == (None, 14, 14, 1)
