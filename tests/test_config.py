"""params.yaml: read once into typed objects; any bad key stops the run before work, naming the key."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from tasks.config import ParamsError, load_params, mirror_override, parse_params
from tasks.digests import MNIST_ARRAY_SHA256, MNIST_NPZ_SHA256, MNIST_NPZ_URL
from tasks.stage import run_stage
from tests.conftest import REPO


def test_repository_params_are_the_seed_defaults():
    params = load_params(REPO / "params.yaml")
    assert params == parse_params({})
    t = params.train
    assert (t.model, t.epochs, t.batch_size, t.learning_rate, t.hidden_units, t.dropout) == (
        "mlp",
        5,
        32,
        0.001,
        128,
        0.2,
    )
    assert params.ingest.source == "keras"
    assert params.ingest.url == MNIST_NPZ_URL
    assert params.ingest.url_sha256 == MNIST_NPZ_SHA256
    assert params.ingest.digests == MNIST_ARRAY_SHA256
    assert (params.validate_.train_size, params.validate_.test_size) == (60000, 10000)
    assert params.preprocess.scale == 255.0


def test_empty_document_gives_defaults():
    assert parse_params(None) == parse_params({})


def test_sections_are_frozen():
    params = parse_params({})
    with pytest.raises(pydantic.ValidationError):
        params.train.epochs = 3


def test_integer_is_accepted_where_a_float_is_expected():
    params = parse_params({"train": {"learning_rate": 1}, "preprocess": {"scale": 255}})
    assert params.train.learning_rate == 1.0
    assert params.preprocess.scale == 255.0


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"trian": {"epochs": 3}}, "trian"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"ingest": {"mirorr": "/data"}}, "ingest.mirorr"),
        ({"validate": {"sizes": 3}}, "validate.sizes"),
    ],
)
def test_unknown_key_is_named(raw, key):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert f"{key}: unknown key" in str(err.value)


@pytest.mark.parametrize(
    ("raw", "key", "allowed"),
    [
        ({"train": {"epochs": "5"}}, "train.epochs", "valid integer"),
        ({"train": {"epochs": True}}, "train.epochs", "valid integer"),
        ({"train": {"epochs": 2.5}}, "train.epochs", "valid integer"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate", "valid number"),
        ({"train": {"model": 3}}, "train.model", "'mlp' or 'cnn'"),
        ({"ingest": {"retries": "3"}}, "ingest.retries", "valid integer"),
        ({"ingest": {"mirror": ["/a"]}}, "ingest.mirror", "valid string"),
        ({"train": None}, "train", "valid dictionary"),
    ],
)
def test_wrong_type_is_named(raw, key, allowed):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    line = next(line for line in str(err.value).splitlines() if line.strip().startswith(f"{key}:"))
    assert allowed in line


@pytest.mark.parametrize(
    ("raw", "key", "allowed"),
    [
        ({"train": {"epochs": 0}}, "train.epochs", "greater than or equal to 1"),
        ({"train": {"batch_size": 0}}, "train.batch_size", "greater than or equal to 1"),
        ({"train": {"dropout": 1.0}}, "train.dropout", "less than 1"),
        ({"train": {"learning_rate": 0.0}}, "train.learning_rate", "greater than 0"),
        ({"train": {"seed": -1}}, "train.seed", "greater than or equal to 0"),
        ({"train": {"model": "rnn"}}, "train.model", "'mlp' or 'cnn'"),
        ({"ingest": {"source": "ftp"}}, "ingest.source", "'keras', 'mirror' or 'npz'"),
        ({"ingest": {"timeout_s": 0.0}}, "ingest.timeout_s", "greater than 0"),
        ({"ingest": {"retries": 11}}, "ingest.retries", "less than or equal to 10"),
        ({"ingest": {"url_sha256": "abc"}}, "ingest.url_sha256", "should match pattern"),
        ({"ingest": {"digests": {**MNIST_ARRAY_SHA256, "x_train": "XYZ"}}}, "ingest.digests.x_train", "pattern"),
        ({"ingest": {"digests": {"x_train": MNIST_ARRAY_SHA256["x_train"]}}}, "ingest.digests", "needs exactly"),
        ({"validate": {"train_size": 0}}, "validate.train_size", "greater than 0"),
        ({"validate": {"max_failing_indices": 0}}, "validate.max_failing_indices", "greater than or equal to 1"),
        ({"preprocess": {"scale": -255.0}}, "preprocess.scale", "greater than 0"),
        ({"evaluate": {"batch_size": 0}}, "evaluate.batch_size", "greater than or equal to 1"),
    ],
)
def test_out_of_range_value_is_named_with_what_is_allowed(raw, key, allowed):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    line = next(line for line in message.splitlines() if line.strip().startswith(f"{key}:"))
    assert allowed in line


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(ParamsError) as err:
        parse_params({"train": {"epochs": 0, "dropout": 2.0}, "evaluate": {"bogus": 1}})
    message = str(err.value)
    for key in ("train.epochs", "train.dropout", "evaluate.bogus"):
        assert f"{key}:" in message


def test_document_that_is_not_a_mapping():
    with pytest.raises(ParamsError, match="expected a mapping of stage sections, got list"):
        parse_params(["train", "epochs"])


def test_malformed_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 5\n  batch_size: [32\n")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert f"{path} is not valid YAML" in str(err.value)
    assert "line" in str(err.value)


def test_bad_value_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": -3}}))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path} is invalid")
    assert "train.epochs: Input should be greater than or equal to 1 (got -3)" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found: run from the project root"):
        load_params(tmp_path / "params.yaml")


def test_stage_stops_before_any_work_on_bad_params(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  epochz: 5\n")
    calls = []
    assert run_stage("train", calls.append) == 1
    assert calls == []
    assert "[train] FAILED: params.yaml is invalid" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_runs_body_with_parsed_params(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 7\n")
    seen = []
    assert run_stage("train", lambda p: seen.append(p.train.epochs)) == 0
    assert seen == [7]
    assert "[train] done in" in capsys.readouterr().out


@pytest.mark.parametrize(("value", "expected"), [("/srv/mnist", "/srv/mnist"), ("  ", None), ("", None), (None, None)])
def test_mirror_override(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("MNIST_MIRROR", raising=False)
    else:
        monkeypatch.setenv("MNIST_MIRROR", value)
    assert mirror_override() == expected
