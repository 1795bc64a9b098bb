"""The flow's window onto DVC: which stages exist, in what order, which changed, and running one.

The stage order is read from dvc.yaml's graph, never written down here: dvc.yaml is the
one place it lives. Each stage runs as `dvc repro --single-item`, so a flow run leaves
exactly the dvc.lock that `dvc repro` would have written.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

TEMPFAIL = 75  # a stage exits with this when a retry may help (network trouble)
EXITED_WITH = re.compile(r"failed to run: .*, exited with (\d+)")


@dataclass(frozen=True)
class StageRun:
    stage: str
    returncode: int
    tail: tuple[str, ...]


def stage_order(root: Path) -> list[str]:
    """Stages in dependency order, ties broken by their position in dvc.yaml."""
    import networkx as nx
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(os.fspath(root)) as repo:  # DVC's API assumes cwd is the repo
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        position = {stage: i for i, stage in enumerate(repo.index.stages)}
        ordered = nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: position[s])
        return [stage.name for stage in ordered]


def stage_changes(root: Path, stage: str) -> list[str]:
    """What DVC sees changed in one stage (deps, params, outs, command); empty when up to date."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(os.fspath(root)) as repo:
        status = repo.status(targets=[stage])
    changes: list[str] = []
    for entries in status.values():
        for entry in entries:
            if isinstance(entry, dict):
                for kind, detail in entry.items():
                    changes.append(f"{kind}: {detail}" if not isinstance(detail, dict) else f"{kind}: {_fmt(detail)}")
            else:
                changes.append(str(entry))
    return changes


def _fmt(detail: dict) -> str:
    return ", ".join(f"{path} {state}" for path, state in detail.items())


def stage_env(extra: dict[str, str]) -> dict[str, str]:
    """The stage runs with this interpreter's bin folder first on PATH, so `python` is ours."""
    env = {**os.environ, **extra}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def run_dvc(
    root: Path, args: list[str], env: dict[str, str], on_line: Callable[[str], None], keep: int = 15
) -> tuple[int, tuple[str, ...]]:
    """Run `dvc <args>` in root, streaming its output line by line; (exit code, the last `keep` lines)."""
    tail: deque[str] = deque(maxlen=keep)
    with subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        env=stage_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if line := raw.rstrip():
                tail.append(line)
                on_line(line)
        return proc.wait(), tuple(tail)


def repro_stage(root: Path, stage: str, env: dict[str, str], on_line: Callable[[str], None]) -> StageRun:
    """Run one stage through DVC; keep the tail of its output for errors."""
    returncode, tail = run_dvc(root, ["repro", "--single-item", stage], env, on_line)
    return StageRun(stage, stage_exit_code(returncode, tail), tail)


def stage_exit_code(dvc_code: int, lines: Iterable[str]) -> int:
    """The stage command's own exit code: DVC exits 255 whatever its stage returned, but says
    `failed to run: <cmd>, exited with N`; that N decides whether a retry may help."""
    if dvc_code == 0:
        return 0
    for line in lines:
        if (match := EXITED_WITH.search(line)) is not None:
            return int(match.group(1))
    return dvc_code


def failure_message(run: StageRun) -> str:
    """The stage's own error lines, without DVC's generic wrapper around them."""
    own = [line for line in run.tail if "FAILED" in line or line.startswith("ERROR")]
    lines = own or list(run.tail)[-5:]
    return f"stage '{run.stage}' failed (exit {run.returncode}): " + " | ".join(lines)
