"""End to end: `dvc repro` on the real MNIST, in a temporary copy of the repository.

Needs the four IDX files: MNIST_MIRROR if set (a folder or URL), else ../shared/data/mnist next
to the repository. Without them the test is skipped, and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.config import ARRAY_NAMES
from tasks.digests import MNIST_ARRAY_SHA256
from tasks.io import file_digest, load_arrays, sha256_array
from tests.conftest import REPO
from tests.repo_factory import copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UP_TO_DATE = "Data and pipelines are up to date."


def mirror_location() -> str:
    value = os.environ.get("MNIST_MIRROR", "").strip()
    if value.startswith(("http://", "https://")):
        return value
    folder = Path(value).resolve() if value else (REPO.parent / "shared" / "data" / "mnist").resolve()
    if not folder.is_dir():
        pytest.skip(f"MNIST mirror {folder} not found: the end-to-end test needs the four IDX files (set MNIST_MIRROR)")
    return str(folder)


class Project:
    def __init__(self, root: Path, mirror: str) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
        self.env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), self.env.get("PATH", "")])
        self.env.update(MNIST_MIRROR=mirror, DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="2")

    def run(self, *cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=1800)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-5000:]}"
        return output


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Project:
    mirror = mirror_location()
    root = copy_project(tmp_path_factory.mktemp("repo"))  # without dvc.lock: it must build everything itself
    project = Project(root, mirror)
    project.run("git", "init", "-q")
    output = project.run("dvc", "repro")
    for stage in ("ingest", "validate", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" in output
    return project


def test_raw_arrays_have_the_pinned_digests(pipeline):
    raw = load_arrays(pipeline.root / "data/raw", ARRAY_NAMES)
    assert {n: raw[n].shape for n in ARRAY_NAMES} == {
        "x_train": (60000, 28, 28),
        "y_train": (60000,),
        "x_test": (10000, 28, 28),
        "y_test": (10000,),
    }
    assert all(raw[n].dtype == np.uint8 for n in ARRAY_NAMES)
    assert {n: sha256_array(raw[n]) for n in ARRAY_NAMES} == MNIST_ARRAY_SHA256
    validation = json.loads((pipeline.root / "reports/validation.json").read_text())
    assert validation["passed"] is True
    assert validation["class_counts"]["test"]["1"] == 1135


def test_processed_arrays_have_the_right_shape_and_range(pipeline):
    processed = load_arrays(pipeline.root / "data/processed", ARRAY_NAMES)
    for name, n in (("x_train", 60000), ("x_test", 10000)):
        x = processed[name]
        assert x.shape == (n, 28, 28, 1)
        assert x.dtype == np.float32
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert float(processed["x_train"].mean()) == pytest.approx(0.1307, abs=1e-4)


def test_default_model_reaches_the_seed_accuracy(pipeline):
    metrics = json.loads((pipeline.root / "reports/metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.975
    assert metrics["test_samples"] == 10000
    assert 0 < metrics["test_loss"] < 0.2
    curves = (pipeline.root / "reports/training.csv").read_text().splitlines()
    assert len(curves) == 1 + 5  # header and the seed's five epochs


def test_status_is_clean_and_second_repro_runs_nothing(pipeline):
    assert UP_TO_DATE in pipeline.run("dvc", "status")
    output = pipeline.run("dvc", "repro")
    assert "Running stage" not in output
    assert UP_TO_DATE in pipeline.run("dvc", "status")


def test_forced_training_reproduces_the_model_byte_for_byte(pipeline):
    model = pipeline.root / "models/model.keras"
    before = file_digest(model)
    assert f"md5: {before}" in (pipeline.root / "dvc.lock").read_text()
    output = pipeline.run("dvc", "repro", "-f", "-s", "train")
    assert "Running stage 'train'" in output
    assert file_digest(model) == before
    assert UP_TO_DATE in pipeline.run("dvc", "status")  # downstream sees no change


def test_prefect_flow_on_the_fresh_workspace_skips_every_stage(pipeline, tmp_path):
    lock = (pipeline.root / "dvc.lock").read_bytes()
    env = {k: v for k, v in pipeline.env.items() if k != "PREFECT_API_URL"}  # the ephemeral server
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    proc = subprocess.run(
        ["mnist-pipeline", "run"], cwd=pipeline.root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stages run: none" in proc.stdout
    assert (proc.stdout + proc.stderr).count("Finished in state Skipped") == 5
    assert (pipeline.root / "dvc.lock").read_bytes() == lock
    assert UP_TO_DATE in pipeline.run("dvc", "status")


def test_lineage_verify_passes_then_names_a_flipped_model_byte(pipeline, tmp_path):
    assert "verify OK" in pipeline.run("mnist-pipeline", "lineage", "verify")
    trace = pipeline.run("mnist-pipeline", "lineage", "trace", "models/model.keras")
    assert all(digest in trace for digest in MNIST_ARRAY_SHA256.values())
    model = pipeline.root / "models/model.keras"
    backup = tmp_path / "model.keras"
    shutil.copy2(model, backup)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    try:
        proc = subprocess.run(
            ["mnist-pipeline", "lineage", "verify"], cwd=pipeline.root, env=pipeline.env, capture_output=True, text=True
        )
        assert proc.returncode != 0
        assert "models/model.keras: changed" in proc.stdout + proc.stderr
    finally:
        shutil.copy2(backup, model)
    assert "verify OK" in pipeline.run("mnist-pipeline", "lineage", "verify")
