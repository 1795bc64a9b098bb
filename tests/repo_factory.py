"""A real git + DVC copy of this project, on tiny synthetic data, for tests that run whole pipelines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, deep_merge, make_arrays, npz_bytes, raw_params


def tracked_files(repo: Path = REPO) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line and (repo / line).is_file()]


def env_for(root: Path, **extra: str) -> dict[str, str]:
    """The environment a user of the copy would have: our venv first on PATH, no mirror override."""
    env = {k: v for k, v in os.environ.items() if k != "MNIST_MIRROR"}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["PYTHONPATH"] = str(root)
    env.update(extra)
    return env


def run(cmd: list[str], root: Path, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=env_for(root, **extra), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], root, check=check)


def copy_project(dest: Path) -> Path:
    """The project's files as a clone of this work holds them, minus dvc.lock: the copy builds everything."""
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    (dest / "dvc.lock").unlink(missing_ok=True)
    return dest


def make_repo(dest: Path, seed: int = 0, **sections: dict) -> Path:
    """Copy the project into dest, point params.yaml at a synthetic npz, git init."""
    copy_project(dest)
    arrays = make_arrays(seed)
    npz = dest.parent / f"{dest.name}-mnist.npz"
    npz.write_bytes(npz_bytes(arrays))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    synthetic = raw_params(arrays, **deep_merge({"ingest": {"source": "npz", "npz_path": str(npz)}}, sections))
    for section, values in synthetic.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "synthetic copy"], dest)
    return dest
