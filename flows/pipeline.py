"""The Prefect flow: one task per DVC stage, in the order dvc.yaml defines.

The flow decides nothing about what is up to date: DVC does. A stage DVC sees as unchanged
finishes in a `Skipped` state; a changed one runs through `dvc repro --single-item`, its
output streamed into the task's log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import deployment, flow_run
from prefect.states import Completed

from flows.artifacts import publish_artifacts
from flows.remote import sync_remote
from flows.stages import TEMPFAIL, failure_message, repro_stage, stage_changes, stage_order
from flows.workspace import apply_overrides, workspace_lock
from tasks.config import load_params


class StageFailed(RuntimeError):
    """A stage exited non-zero; the message carries the stage's own error."""


class StageTransientFailure(StageFailed):
    """A stage failed in a way a retry may fix (the network)."""


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except StageTransientFailure:
        return True
    except Exception:
        return False
    return False


def trigger() -> str:
    return "prefect-deployment" if deployment.id else "prefect"


@task(name="stage", retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=_retry_transient)
def run_stage(stage: str, root: str, stages_run: list[str]):
    """Run one DVC stage if DVC says it changed; otherwise finish as Skipped."""
    logger = get_run_logger()
    changes = stage_changes(Path(root), stage)
    if not changes:
        logger.info("stage '%s' is up to date: skipped", stage)
        return Completed(name="Skipped", message=f"'{stage}' up to date", data={"stage": stage, "ran": False})
    logger.info("stage '%s' changed: %s", stage, "; ".join(changes)[:500])
    env = {
        "MNIST_RUN_TRIGGER": trigger(),
        "MNIST_RUN_ID": str(flow_run.id or ""),
        "MNIST_STAGES_RUN": ",".join([*stages_run, stage]),
    }
    result = repro_stage(Path(root), stage, env, on_line=logger.info)
    if result.returncode == TEMPFAIL:
        raise StageTransientFailure(failure_message(result))
    if result.returncode != 0:
        raise StageFailed(failure_message(result))
    return {"stage": stage, "ran": True}


@flow(name="mnist-pipeline")
def mnist_pipeline(
    root: str = ".",
    overrides: dict[str, Any] | None = None,
    epochs: int | None = None,
    pull: bool = False,
    push: bool = False,
) -> dict:
    """ingest → validate → preprocess → train → evaluate, as dvc.yaml wires them.

    pull/push: `dvc pull` before the stages and `dvc push` after them (deployments set both).
    """
    workspace = Path(root).resolve()
    overrides = {**(overrides or {}), **({"train.epochs": epochs} if epochs is not None else {})}
    with workspace_lock(workspace):
        if pull:
            sync_remote.with_options(name="dvc-pull")(os.fspath(workspace), "pull")
        applied = apply_overrides(workspace, overrides)
        load_params(workspace / "params.yaml")  # a bad setting fails here, before any stage runs
        ran: list[str] = []
        for stage in stage_order(workspace):  # the table of contents is dvc.yaml's graph
            outcome = run_stage.with_options(name=stage)(stage, os.fspath(workspace), ran)
            if isinstance(outcome, dict) and outcome["ran"]:
                ran.append(stage)
        summary = publish_artifacts(workspace, ran, applied, trigger(), str(flow_run.id or ""))
        if push:
            sync_remote.with_options(name="dvc-push")(os.fspath(workspace), "push")
    return summary
