"""train: the seed's network (and the cnn), learning on tiny data, reproducible to the byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import tasks.train as train_module
from tasks.config import TrainParams
from tasks.io import file_digest, save_arrays
from tasks.modelio import save_model
from tasks.stage import StageError
from tasks.train import build_model, compile_model, seed_everything, train, train_model, training_csv
from tests.conftest import raw_params

FAST = {"epochs": 1, "batch_size": 10, "steps_per_execution": 1}


def layer_summary(model) -> list[tuple]:
    rows = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            rows.append((kind, layer.units, layer.activation.__name__))
        elif kind == "Dropout":
            rows.append((kind, layer.rate))
        elif kind == "Conv2D":
            rows.append((kind, layer.filters, layer.kernel_size, layer.activation.__name__))
        else:
            rows.append((kind,))
    return rows


def test_mlp_is_the_seed_network():
    model = build_model("mlp")
    assert layer_summary(model) == [("Flatten",), ("Dense", 128, "relu"), ("Dropout", 0.2), ("Dense", 10, "linear")]
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    assert [tuple(layer.output.shape) for layer in model.layers] == [(None, 784), (None, 128), (None, 128), (None, 10)]
    assert model.count_params() == 784 * 128 + 128 + 128 * 10 + 10


def test_mlp_follows_its_parameters():
    model = build_model("mlp", hidden_units=16, dropout=0.5)
    assert layer_summary(model) == [("Flatten",), ("Dense", 16, "relu"), ("Dropout", 0.5), ("Dense", 10, "linear")]


def test_cnn_layers_and_shapes():
    model = build_model("cnn")
    assert layer_summary(model) == [
        ("Conv2D", 32, (3, 3), "relu"),
        ("MaxPooling2D",),
        ("Conv2D", 64, (3, 3), "relu"),
        ("MaxPooling2D",),
        ("Flatten",),
        ("Dropout", 0.2),
        ("Dense", 128, "relu"),
        ("Dropout", 0.2),
        ("Dense", 10, "linear"),
    ]
    shapes = [tuple(layer.output.shape) for layer in model.layers]
    assert shapes[:5] == [(None, 26, 26, 32), (None, 13, 13, 32), (None, 11, 11, 64), (None, 5, 5, 64), (None, 1600)]
    assert model.output_shape == (None, 10)


def test_unknown_model_kind():
    with pytest.raises(StageError, match=r"train\.model must be 'mlp' or 'cnn', got 'rnn'"):
        build_model("rnn")


def test_compile_uses_the_seeds_loss_and_optimizer():
    import keras

    model = compile_model(build_model("mlp"), learning_rate=0.002)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.002)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert model.loss.get_config()["from_logits"] is True


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_training_lowers_the_loss(processed, kind):
    x, y = processed["x_train"], processed["y_train"]
    p = TrainParams(model=kind, epochs=4, batch_size=10, steps_per_execution=1, seed=3)
    seed_everything(p.seed)
    untrained = compile_model(build_model(kind, p.hidden_units, p.dropout), p.learning_rate)
    before = untrained.evaluate(x, y, verbose=0)[0]
    model, rows = train_model(x, y, p, verbose=0)
    after = model.evaluate(x, y, verbose=0)[0]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert after < 0.8 * before
    assert before == pytest.approx(np.log(10), rel=0.25)  # untrained logits: about uniform


def test_same_seed_gives_identical_model_bytes(processed, tmp_path):
    x, y = processed["x_train"], processed["y_train"]
    p = TrainParams(**FAST, seed=7)
    paths = [tmp_path / "a.keras", tmp_path / "b.keras", tmp_path / "c.keras"]
    for path, seed in zip(paths, (7, 7, 8), strict=True):
        model, _ = train_model(x, y, p.model_copy(update={"seed": seed}), verbose=0)
        save_model(model, path)
    a, b, c = (path.read_bytes() for path in paths)
    assert a == b
    assert a != c  # the seed matters, so the equality above is not vacuous


def test_batch_larger_than_data_is_refused(processed):
    p = TrainParams(epochs=1, batch_size=64)
    with pytest.raises(StageError, match=r"train\.batch_size 64 is larger than the 50 training samples"):
        train_model(processed["x_train"], processed["y_train"], p, verbose=0)


def test_training_csv():
    rows = [{"epoch": 1, "accuracy": 0.5, "loss": 1.234567891}, {"epoch": 2, "accuracy": 0.75, "loss": 0.5}]
    assert training_csv(rows) == "epoch,accuracy,loss\n1,0.5,1.23457\n2,0.75,0.5\n"
    assert training_csv([]) == "epoch,loss,accuracy\n"


def test_stage_writes_model_and_curves(project, arrays, processed, make_params):
    save_arrays(Path("data/processed"), processed)
    train(make_params(train={**FAST, "epochs": 2}))
    assert Path("models/model.keras").is_file()
    lines = Path("reports/training.csv").read_text().splitlines()
    assert lines[0].split(",")[0] == "epoch" and {"loss", "accuracy"} <= set(lines[0].split(","))
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]


def test_stage_command_is_reproducible(project, arrays, processed, capsys):
    save_arrays(Path("data/processed"), processed)
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays)))
    assert train_module.main() == 0
    first = file_digest("models/model.keras")
    curves = Path("reports/training.csv").read_text()
    assert train_module.main() == 0
    assert file_digest("models/model.keras") == first
    assert Path("reports/training.csv").read_text() == curves
    assert "[train] wrote models/model.keras" in capsys.readouterr().out
