"""evaluate: metrics checked against a hand-made case, and the stage's outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import tasks.evaluate as evaluate_module
from tasks.evaluate import compute_metrics, confusion_csv, confusion_matrix, cross_entropy, evaluate, summary
from tasks.io import save_arrays
from tasks.stage import StageError
from tests.conftest import raw_params, snapshot

# Six samples, three classes; each row of PROBS is a softmax output, so log(PROBS) are its logits.
LABELS = np.array([0, 0, 1, 1, 2, 2], dtype=np.uint8)
PROBS = np.array(
    [
        [0.50, 0.25, 0.25],  # true 0, predicted 0
        [0.80, 0.10, 0.10],  # true 0, predicted 0
        [0.60, 0.30, 0.10],  # true 1, predicted 0
        [0.20, 0.70, 0.10],  # true 1, predicted 1
        [0.10, 0.50, 0.40],  # true 2, predicted 1
        [0.25, 0.25, 0.50],  # true 2, predicted 2
    ]
)
# -mean(log p_true) = -ln(0.5 * 0.8 * 0.3 * 0.7 * 0.4 * 0.5) / 6 = -ln(0.0168) / 6
HAND_LOSS = 0.681063


def test_cross_entropy_hand_computed():
    assert -np.log(0.0168) / 6 == pytest.approx(HAND_LOSS, abs=1e-6)
    assert cross_entropy(np.log(PROBS), LABELS) == pytest.approx(HAND_LOSS, abs=1e-6)
    shifted = np.log(PROBS) + np.array([[5.0], [-3.0], [100.0], [0.0], [7.5], [-50.0]])  # softmax ignores shifts
    assert cross_entropy(shifted, LABELS) == pytest.approx(HAND_LOSS, abs=1e-6)


def test_cross_entropy_simple_cases():
    assert cross_entropy(np.zeros((4, 10), np.float32), np.array([0, 3, 9, 5])) == pytest.approx(np.log(10), abs=1e-12)
    assert cross_entropy(np.array([[0.0, 0.0]]), np.array([1])) == pytest.approx(np.log(2), abs=1e-12)
    assert cross_entropy(np.array([[1000.0, 0.0]], np.float32), np.array([1])) == pytest.approx(1000.0)  # no overflow


def test_cross_entropy_matches_keras():
    import keras

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert cross_entropy(logits, labels) == pytest.approx(float(loss(labels, logits)), rel=1e-5)


def test_confusion_matrix_rows_are_true_classes():
    predicted = np.log(PROBS).argmax(axis=1)
    assert confusion_matrix(LABELS, predicted, 3).tolist() == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    ten = confusion_matrix(np.array([9, 9, 0], np.uint8), np.array([9, 1, 0]))
    assert ten.shape == (10, 10)
    assert (ten[9, 9], ten[9, 1], ten[0, 0], ten.sum()) == (1, 1, 1, 3)


def test_compute_metrics_hand_made_case():
    metrics, predicted = compute_metrics(np.log(PROBS), LABELS)
    assert predicted.tolist() == [0, 0, 0, 1, 1, 2]
    assert metrics["test_accuracy"] == round(4 / 6, 6)
    assert metrics["test_loss"] == HAND_LOSS
    assert metrics["test_samples"] == 6
    assert metrics["per_class"] == {
        "0": {"precision": round(2 / 3, 6), "recall": 1.0, "f1": 0.8, "support": 2},
        "1": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "2": {"precision": 1.0, "recall": 0.5, "f1": round(2 / 3, 6), "support": 2},
    }
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-6)
    json.dumps(metrics)  # plain JSON types only


def test_class_never_predicted_nor_present_scores_zero():
    logits = np.zeros((3, 10))
    logits[[0, 1, 2], [0, 1, 1]] = 5.0
    metrics, _ = compute_metrics(logits, np.array([0, 1, 2], np.uint8))
    assert metrics["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["per_class"]["7"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["per_class"]["1"]["precision"] == 0.5


def test_confusion_csv():
    assert confusion_csv(np.array([3, 1], np.uint8), np.array([3, 7])) == "actual,predicted\n3,3\n1,7\n"


def test_summary_is_readable():
    metrics, _ = compute_metrics(np.log(PROBS), LABELS)
    lines = summary(metrics).splitlines()
    assert lines[0] == "test accuracy 0.6667  loss 0.6811  macro F1 0.6556"
    assert lines[1].split() == ["class", "precision", "recall", "f1", "support"]
    assert lines[2].split() == ["0", "0.6667", "1.0000", "0.8000", "2"]


@pytest.fixture
def evaluated_project(project, processed, model_file, monkeypatch) -> Path:
    """A project with processed data and a trained model; lineage recording (tested elsewhere) stubbed."""
    save_arrays(Path("data/processed"), processed)
    Path("models").mkdir()
    shutil.copy(model_file, "models/model.keras")
    monkeypatch.setattr(
        evaluate_module, "record_evaluate", lambda root: {"trigger": "test", "run_id": None}, raising=False
    )
    return project


def test_stage_writes_metrics_and_confusion(evaluated_project, processed, params, capsys):
    import keras

    metrics = evaluate(params)
    logits = keras.saving.load_model("models/model.keras").predict(processed["x_test"], verbose=0)
    expected, predicted = compute_metrics(logits, processed["y_test"])
    assert json.loads(Path("reports/metrics.json").read_text()) == metrics
    assert metrics["test_accuracy"] == expected["test_accuracy"]
    assert metrics["test_loss"] == pytest.approx(expected["test_loss"], abs=1e-5)
    assert metrics["test_samples"] == 20
    assert sum(s["support"] for s in metrics["per_class"].values()) == 20
    assert Path("reports/confusion.csv").read_text() == confusion_csv(processed["y_test"], predicted)
    assert "test accuracy" in capsys.readouterr().out


def test_stage_refuses_data_of_another_shape(evaluated_project, processed, params):
    small = {**processed, "x_test": processed["x_test"][:, :14, :14, :].copy()}
    save_arrays(Path("data/processed"), small)
    with pytest.raises(
        StageError, match=r"expects inputs of shape \(28, 28, 1\), but the processed data has \(14, 14, 1\)"
    ):
        evaluate(params)
    assert not Path("reports").exists()


def test_stage_command_fails_cleanly_on_bad_model(evaluated_project, arrays, capsys):
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays)))
    Path("models/model.keras").write_bytes(b"not a model")
    before = snapshot(evaluated_project)
    assert evaluate_module.main() == 1
    assert "[evaluate] FAILED: models/model.keras is not a Keras model" in capsys.readouterr().err
    assert snapshot(evaluated_project) == before


def test_numpy_inference_of_the_seed_mlp_equals_keras(model_file, processed):
    """The seed mlp's logits read from the file without Keras agree with Keras's own predict."""
    import keras

    from tasks.evaluate import mlp_layers, mlp_logits

    x = processed["x_test"]
    dense = mlp_layers(model_file, (28, 28, 1))
    assert dense is not None and [d[0].shape for d in dense] == [(784, 128), (128, 10)]
    assert [d[2] for d in dense] == ["relu", "linear"]
    theirs = keras.saving.load_model(model_file, safe_mode=True).predict(x, verbose=0)
    ours = mlp_logits(dense, x, batch_size=7)  # batches that do not divide the data
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()


def test_anything_but_the_seed_mlp_goes_through_keras_safe_mode(tmp_path, processed):
    from tasks.config import TrainParams
    from tasks.evaluate import mlp_layers
    from tasks.modelio import save_model
    from tasks.train import train_model

    model, _ = train_model(
        processed["x_train"], processed["y_train"], TrainParams(model="cnn", epochs=1, batch_size=10)
    )
    save_model(model, tmp_path / "cnn.keras")
    assert mlp_layers(tmp_path / "cnn.keras", (28, 28, 1)) is None
    assert mlp_layers(tmp_path / "cnn.keras", (14, 14, 1)) is None
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    assert mlp_layers(tmp_path / "junk.keras", (28, 28, 1)) is None
