"""Moving the workspace's DVC data to and from the default remote, around a deployment run.

A run on a fresh checkout pulls first, so every stage whose outputs are already in the remote
is skipped instead of recomputed; it pushes last, so the next checkout (or a colleague's
`dvc pull`) finds what this run produced. A pull that finds nothing (the first run against an
empty remote, or outputs no run has pushed yet) is not an error: the stages then compute what
is missing. A push that fails is: a run whose outputs never reached the remote cannot be
restored from it, so it must not look successful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import get_run_logger, task
from prefect.states import Completed

from flows.stages import run_dvc

Direction = Literal["pull", "push"]


class RemoteSyncFailed(RuntimeError):
    """`dvc push` failed: this run's outputs are not in the remote."""


def dvc_sync(root: Path, direction: Direction, on_line=print) -> tuple[int, list[str]]:
    """Run `dvc pull` or `dvc push` in root, streaming its output; (exit code, last lines)."""
    code, tail = run_dvc(root, [direction], {}, on_line, keep=10)
    return code, list(tail)


@task(name="sync-remote", retries=1, retry_delay_seconds=10)
def sync_remote(root: str, direction: Direction):
    """`dvc pull` before the stages (a miss only warns) or `dvc push` after them (a miss fails the run)."""
    logger = get_run_logger()
    code, tail = dvc_sync(Path(root), direction, on_line=logger.info)
    if code == 0:
        return {"direction": direction, "ok": True}
    message = " | ".join(line for line in tail if "ERROR" in line or "failed" in line.lower()) or " | ".join(tail)
    if direction == "push":
        raise RemoteSyncFailed(f"dvc push failed (exit {code}): {message}")
    logger.warning("dvc pull could not restore everything (exit %s); the stages will compute what is missing", code)
    outcome = {"direction": direction, "ok": False}
    return Completed(name="Incomplete", message=f"dvc pull: {message}"[:500], data=outcome)
