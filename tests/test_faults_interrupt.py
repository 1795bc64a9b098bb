"""Interrupted and overlapping runs (issue 7), in real git + DVC copies of the project on synthetic data.

Training is stretched to EPOCHS epochs so that a run can be caught mid-epoch: each test waits
for the train stage's first epoch line, then kills (or races) the whole `dvc repro`.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tasks.io import file_digest
from tests.repo_factory import dvc, env_for, make_repo

pytestmark = pytest.mark.slow

EPOCHS = 150
UP_TO_DATE = "Data and pipelines are up to date."
PROTECTED = ("models/model.keras", "reports/training.csv", "dvc.lock")
BUSY = "is busy, it is being blocked by:"
LOCKED = "ERROR: Unable to acquire lock. Most likely another DVC process is running"


class Output:
    """Drains a process's output in the background and says when a line first appears."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._queue.put(line.rstrip())

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self.lines.append(line)
            if text in line:
                return True
        return False

    def text(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One synthetic project, fully reproduced once; each test works on its own copy."""
    root = make_repo(tmp_path_factory.mktemp("faults") / "repo")
    dvc(root, "repro")
    return root


@pytest.fixture
def repo(built, tmp_path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(built, dest, symlinks=True)
    assert UP_TO_DATE in dvc(dest, "status").stdout
    return dest


def set_epochs(root: Path, epochs: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def start_repro(root: Path) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=root,
        env=env_for(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: dvc and the stage it runs are killed together
    )
    return proc, Output(proc)


def wait_group_gone(pgid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process group {pgid} still alive after {timeout}s")


def protected(root: Path) -> dict[str, bytes]:
    return {path: (root / path).read_bytes() for path in PROTECTED}


def leftovers(root: Path) -> list[str]:
    found = [p for folder in ("models", "reports", "data") for p in (root / folder).rglob("*")]
    return sorted(str(p.relative_to(root)) for p in found if ".tmp" in p.name or p.name.endswith(".old"))


def lock_md5(root: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_train_mid_epoch_keeps_model_and_lock_and_the_next_repro_recovers(repo, sig):
    before = protected(repo)
    set_epochs(repo, EPOCHS)
    proc, output = start_repro(repo)
    try:
        assert output.wait_for("[train] epoch 1:", timeout=600), output.text()
        assert proc.poll() is None, f"training ended before it could be killed:\n{output.text()}"
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)
        wait_group_gone(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert f"[train] epoch {EPOCHS}:" not in output.text()
    assert protected(repo) == before
    assert leftovers(repo) == []
    assert UP_TO_DATE not in dvc(repo, "status").stdout  # DVC knows train has not caught up

    recovery = dvc(repo, "repro").stdout
    assert "Running stage 'train'" in recovery
    assert f"[train] epoch {EPOCHS}:" in recovery
    assert UP_TO_DATE in dvc(repo, "status").stdout
    assert lock_md5(repo, "train", "models/model.keras") == file_digest(repo / "models/model.keras")
    assert (repo / "models/model.keras").read_bytes() != before["models/model.keras"]
    assert len((repo / "reports/training.csv").read_text().splitlines()) == 1 + EPOCHS


def test_second_dvc_repro_fails_clearly_and_corrupts_nothing(repo):
    before = protected(repo)
    set_epochs(repo, EPOCHS)
    proc, output = start_repro(repo)
    try:
        assert output.wait_for("[train] epoch 1:", timeout=600), output.text()
        second = dvc(repo, "repro", check=False)
        print(second.stdout, second.stderr, sep="\n")
        first_still_running = proc.poll() is None
        if first_still_running:
            assert protected(repo) == before  # the second run wrote nothing, not even dvc.lock
        assert proc.wait(timeout=900) == 0, output.text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # DVC holds its repo lock only while it plans and records; while a stage runs, the per-path
    # rwlock guards that stage's deps and outs. Either way the second run stops before any work.
    assert second.returncode != 0
    assert BUSY in second.stderr or LOCKED in second.stderr, second.stderr
    assert "Running stage" not in second.stdout
    assert first_still_running, "the first repro ended before the second started: the race was not tested"
    assert UP_TO_DATE in dvc(repo, "status").stdout
    assert lock_md5(repo, "train", "models/model.keras") == file_digest(repo / "models/model.keras")
    assert len((repo / "reports/training.csv").read_text().splitlines()) == 1 + EPOCHS
    assert leftovers(repo) == []


def test_a_stage_exiting_75_reaches_the_flow_as_tempfail(tmp_path):
    from flows.stages import TEMPFAIL, repro_stage

    root = tmp_path / "tiny"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "dvc.yaml").write_text('stages:\n  flaky:\n    cmd: python -c "import sys; sys.exit(75)"\n')
    lines: list[str] = []
    run = repro_stage(root, "flaky", env_for(root), lines.append)
    assert "exited with 75" in "\n".join(lines)
    assert run.returncode == TEMPFAIL
