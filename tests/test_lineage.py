"""Lineage records, DVC-compatible hashing and the pure helpers of trace, history, verify and the card."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tasks.lineage import (
    CARD,
    LINEAGE,
    RUN_LOG,
    append_run,
    current_lineage,
    read_runs,
    record_evaluate,
    record_run,
    redact,
    run_context,
)
from tasks.lineage_audit import _differences, verify
from tasks.lineage_card import describe_architecture, render_card
from tasks.lineage_cli import short, table
from tasks.lineage_dvc import cached_manifest, code_paths, hash_paths, is_inside, lock_outs, manifest_md5, pipeline
from tasks.lineage_trace import flatten, params_diff, record_digests
from tests.conftest import REPO

# ---------------------------------------------------------------- hashing as DVC does it


def test_file_md5_is_plain_md5(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"\x00\x01abc" * 1000)
    info = hash_paths(tmp_path, ["f.bin"])["f.bin"]
    assert info == {"md5": hashlib.md5(b"\x00\x01abc" * 1000).hexdigest(), "size": 5000}


def test_folder_md5_equals_dvc_data_tree_digest(tmp_path):
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    files = {"b.npy": b"bbb", "a.npy": b"a" * 70000, "sub/c.txt": b"text\r\n"}
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    tree = Tree()
    for rel, data in files.items():
        tree.add(tuple(rel.split("/")), Meta(), HashInfo("md5", hashlib.md5(data).hexdigest()))
    tree.digest()
    info = hash_paths(tmp_path, ["d"])["d"]
    assert info["md5"] == tree.hash_info.value
    assert info["nfiles"] == 3 and info["size"] == sum(len(d) for d in files.values())
    assert info["files"]["sub/c.txt"] == hashlib.md5(b"text\r\n").hexdigest()  # no dos2unix in DVC 3's md5


def test_missing_path_hashes_to_none(tmp_path):
    assert hash_paths(tmp_path, ["nope"]) == {"nope": None}


def test_cached_manifest_reads_dvc_cache(tmp_path):
    manifest = {"x.npy": "0" * 32, "y.npy": "1" * 32}
    md5 = manifest_md5(manifest)
    entry = tmp_path / ".dvc/cache/files/md5" / md5[:2] / f"{md5[2:-4]}.dir"
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps([{"md5": m, "relpath": r} for r, m in sorted(manifest.items())]))
    assert cached_manifest(tmp_path, md5) == manifest
    assert cached_manifest(tmp_path, "f" * 32 + ".dir") is None
    assert cached_manifest(tmp_path, "f" * 32) is None


# ---------------------------------------------------------------- dvc.yaml / dvc.lock


def test_pipeline_of_this_repo_declares_the_lineage_outputs():
    stages = pipeline(REPO)
    assert list(stages) == ["ingest", "validate", "preprocess", "train", "evaluate"]
    assert {"reports/lineage.json", "reports/model_card.md", "reports/metrics.json"} <= set(stages["evaluate"]["outs"])
    assert "tasks/lineage.py" in stages["evaluate"]["deps"]
    code = code_paths(stages)
    assert "tasks/train.py" in code and "data/raw" not in code and "data/processed/x_test.npy" not in code


def test_lock_outs_and_is_inside():
    lock = {"stages": {"a": {"outs": [{"path": "data/x", "md5": "m.dir", "nfiles": 2}]}, "b": {"outs": []}}}
    assert lock_outs(lock) == {"data/x": {"stage": "a", "md5": "m.dir", "nfiles": 2}}
    assert is_inside("data/x/f.npy", "data/x") and is_inside("data/x", "data/x")
    assert not is_inside("data/xy/f.npy", "data/x")


# ---------------------------------------------------------------- records


def test_redact_strips_credentials_and_secret_query_values():
    record = {
        "url": "https://alice:s3cret@example.com/mnist.npz?X-Amz-Signature=abc&region=eu",
        "files": {"s3://key:pw@bucket/x.gz": "digest"},
        "list": ["http://token@host/a", "plain text with user@example.com", 3],
    }
    out = redact(record)
    text = json.dumps(out)
    assert "s3cret" not in text and "abc" not in text and "key:pw" not in text and "token@" not in text
    assert out["url"] == "https://***@example.com/mnist.npz?X-Amz-Signature=***&region=eu"
    assert out["list"][1:] == ["plain text with user@example.com", 3]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("dvc repro", None, ["evaluate"])),
        (
            {"MNIST_RUN_TRIGGER": "prefect", "MNIST_RUN_ID": "f-1", "MNIST_STAGES_RUN": "train, evaluate"},
            ("prefect", "f-1", ["train", "evaluate"]),
        ),
        ({"DVC_EXP_NAME": "sweet-pear"}, ("dvc exp run", "sweet-pear", ["evaluate"])),
        ({"MNIST_RUN_TRIGGER": "prefect", "MNIST_RUN_ID": "", "DVC_EXP_NAME": "x"}, ("prefect", None, ["evaluate"])),
    ],
)
def test_run_context(env, expected):
    assert run_context(env) == expected


def test_run_log_appends_lines_and_skips_a_torn_one(tmp_path):
    append_run(tmp_path, {"n": 1})
    with open(tmp_path / RUN_LOG, "a") as handle:
        handle.write('{"n": 2, "torn')  # a writer killed mid-line
    (tmp_path / RUN_LOG).write_text((tmp_path / RUN_LOG).read_text() + "\n")
    append_run(tmp_path, {"n": 3})
    assert [r["n"] for r in read_runs(tmp_path)] == [1, 3]
    assert read_runs(tmp_path / "elsewhere") == []


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A hand-made workspace with every artifact dvc.yaml declares (no DVC run, no git)."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["url"] = "https://bob:hunter2@example.com/mnist.npz"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for folder in ("data/raw", "data/processed"):
        (root / folder).mkdir(parents=True)
        for name in ("x_train", "y_train", "x_test", "y_test"):
            (root / folder / f"{name}.npy").write_bytes(f"{folder}/{name}".encode())
    (root / "models").mkdir()
    (root / "models/model.keras").write_bytes(b"model v1")
    (root / "reports").mkdir()
    ingest = {
        "source": {"kind": "keras", "location": params["ingest"]["url"], "files": {params["ingest"]["url"]: "ab" * 32}},
        "arrays": {n: {"sha256": d} for n, d in params["ingest"]["digests"].items()},
    }
    (root / "reports/ingest.json").write_text(json.dumps(ingest))
    validation = {"schema_version": "1", "passed": True, "samples": {"train": 8, "test": 2}}
    (root / "reports/validation.json").write_text(json.dumps(validation))
    (root / "reports/training.csv").write_text("epoch,loss\n1,0.5\n")
    per_class = {str(c): {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1} for c in range(10)}
    metrics = {"test_accuracy": 0.5, "test_loss": 1.25, "macro_f1": 0.5, "test_samples": 10, "per_class": per_class}
    (root / "reports/metrics.json").write_text(json.dumps(metrics))
    (root / "reports/confusion.csv").write_text("actual,predicted\n1,1\n")
    for rel in code_paths(pipeline(root)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    return root


def test_record_run_logs_everything_and_no_secret(workspace, monkeypatch):
    monkeypatch.setenv("SOME_API_TOKEN", "tok-123")  # never dumped: records hold no environment
    record = record_run(workspace, "prefect", "run-7", ["train", "evaluate"])
    assert read_runs(workspace) == [record]
    assert json.loads((workspace / LINEAGE).read_text()) == record
    assert record["trigger"] == "prefect" and record["run_id"] == "run-7"
    assert record["stages_run"] == ["train", "evaluate"]
    assert record["model_md5"] == hashlib.md5(b"model v1").hexdigest()
    assert record["data_md5"]["raw"] == hash_paths(workspace, ["data/raw"])["data/raw"]["md5"]
    assert (
        record["artifacts"]["data/processed"]["files"]["x_test.npy"]
        == hashlib.md5(b"data/processed/x_test").hexdigest()
    )
    assert set(record["artifacts"]) == {o for s in pipeline(workspace).values() for o in s["outs"]} - {
        LINEAGE.as_posix(),
        CARD.as_posix(),
    }
    assert record["raw_arrays"]["x_train"] == record["params"]["ingest"]["digests"]["x_train"]
    assert record["schema_version"] == "1" and record["validation"]["passed"] is True
    assert record["metrics"] == {"test_accuracy": 0.5, "test_loss": 1.25, "macro_f1": 0.5, "test_samples": 10}
    assert record["git"] == {"commit": None, "dirty": None, "changed": []}  # not a git repository
    assert "tasks/train.py" in record["code"]
    assert record["changed_since_previous"] == sorted(record["artifacts"])
    text = (workspace / RUN_LOG).read_text()
    assert "hunter2" not in text and "tok-123" not in text and "https://***@example.com" in text


def test_record_run_without_evaluate_leaves_lineage_json_alone(workspace):
    first = record_run(workspace, "dvc repro", None, ["evaluate"])
    second = record_run(workspace, "prefect", "r2", [])  # a scheduled run that skipped every stage
    assert json.loads((workspace / LINEAGE).read_text()) == first
    assert [r["run_id"] for r in read_runs(workspace)] == [None, "r2"]
    assert second["changed_since_previous"] == []


def test_current_lineage_prefers_the_record_of_the_model_in_the_workspace(workspace):
    first = record_run(workspace, "dvc repro", "one", ["evaluate"])
    (workspace / "models/model.keras").write_bytes(b"model v2")
    record_run(workspace, "dvc repro", "two", ["evaluate"])
    assert current_lineage(workspace)["run_id"] == "two"
    (workspace / "models/model.keras").write_bytes(b"model v1")
    assert current_lineage(workspace)["run_id"] == first["run_id"]
    (workspace / "models/model.keras").write_bytes(b"never recorded")
    rebuilt = current_lineage(workspace)
    assert rebuilt["lineage_source"] == "workspace files" and rebuilt["trigger"] == "unknown"


def test_record_evaluate_writes_the_card(workspace):
    record = record_evaluate(workspace, env={"MNIST_RUN_TRIGGER": "prefect", "MNIST_RUN_ID": "abc"})
    card = (workspace / CARD).read_text()
    assert record["run_id"] == "abc" and record["model_md5"] in card
    assert "| 9 | 0.5000 | 0.5000 | 0.5000 | 1 |" in card


def test_verify_without_dvc_lock_fails(workspace):
    result = verify(workspace)
    assert not result["ok"] and result["errors"][0]["path"] == "dvc.lock"


# ---------------------------------------------------------------- trace, history, card, tables


def test_record_digests_cover_source_arrays_artifacts_and_members():
    record = {
        "source": {"files": {"u": "s" * 64}},
        "raw_arrays": {"x_train": "a" * 64},
        "artifacts": {"data/raw": {"stage": "ingest", "md5": "d.dir", "files": {"x.npy": "f" * 32}}},
    }
    assert set(record_digests(record)) == {
        ("s" * 64, "source u", "ingest"),
        ("a" * 64, "data/raw/x_train.npy (array)", "ingest"),
        ("d.dir", "data/raw", "ingest"),
        ("f" * 32, "data/raw/x.npy", "ingest"),
    }


def test_params_diff_names_changed_added_and_removed_keys():
    old = {"train": {"epochs": 5, "seed": 42}, "evaluate": {"batch_size": 1000}}
    new = {"train": {"epochs": 10, "seed": 42, "model": "cnn"}, "evaluate": {}}
    assert flatten(old) == {"train.epochs": 5, "train.seed": 42, "evaluate.batch_size": 1000}
    assert params_diff(old, new) == {
        "evaluate.batch_size": [1000, None],
        "train.epochs": [5, 10],
        "train.model": [None, "cnn"],
    }
    assert params_diff(None, new) == {}


def test_differences_reaches_the_leaves():
    assert _differences("train", {"epochs": 1, "seed": 1}, {"epochs": 2, "seed": 1}) == {"train.epochs": (1, 2)}
    assert _differences("x", 1, 1) == {}


def test_architecture_follows_the_params():
    assert describe_architecture({"model": "mlp", "hidden_units": 64, "dropout": 0.1}) == (
        "Input(28, 28, 1) → Flatten → Dense(64, relu) → Dropout(0.1) → Dense(10) logits"
    )
    assert "Conv2D(32" in describe_architecture({"model": "cnn"})


def test_card_renders_without_metrics_or_validation():
    card = render_card({"params": {}, "model_md5": "m"}, {})
    assert card.startswith("# Model card") and "`m`" in card and "n/a" in card


def test_table_and_short():
    assert table(["a", "bb"], [[1, None], ["xyz", 2]]).splitlines() == ["a    bb", "1    -", "xyz  2"]
    assert short("0123456789abcdef.dir") == "01234567.dir" and short(None) == "-"
