"""The scheduled deployment: nightly by default, one run at a time, pulling and pushing DVC data.

Two ways to run it, one definition of what it is:
- `mnist-pipeline serve` (this module): `flow.serve` creates the deployment and runs its flow
  runs itself, no work pool needed. The simplest way to run the pipeline every night.
- `prefect deploy --all` with the top-level prefect.yaml, for workers in a work pool; the
  constants below and prefect.yaml must agree (tests/test_deploy.py checks they do).

Concurrency: the deployment allows one active run, and an overlapping one is ENQUEUED: the
server answers its start with `Scheduled("AwaitingConcurrencySlot")` and retries it when the
slot frees. A queued run costs nothing while it waits and, once it starts, DVC skips every
stage the previous run already brought up to date, so waiting wastes no work; cancelling
instead (CANCEL_NEW) would silently drop a run someone asked for, say by hand with other
parameters. The slot is a lease the running process renews: if that process is killed, the
lease expires and the slot frees itself. Under it, the workspace lock (flows/workspace.py)
still serializes a `mnist-pipeline run` started by hand against a deployment run.
"""

from __future__ import annotations

import os
from pathlib import Path

DEPLOYMENT_NAME = "nightly"
DEFAULT_CRON = "0 2 * * *"  # 02:00 every night
DEFAULT_TIMEZONE = "UTC"
CONCURRENCY_LIMIT = 1
COLLISION_STRATEGIES = ("ENQUEUE", "CANCEL_NEW")
DEFAULT_COLLISION = "ENQUEUE"
TAGS = ["mnist", "scheduled"]
LOOPBACK = "127.0.0.1"


def deployment_parameters(root: Path) -> dict:
    """A deployment run pulls before its stages and pushes after them."""
    return {"root": os.fspath(Path(root).resolve()), "pull": True, "push": True}


def concurrency(collision: str = DEFAULT_COLLISION):
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=CONCURRENCY_LIMIT, collision_strategy=ConcurrencyLimitStrategy(collision))


def serve(
    root: Path,
    *,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    name: str = DEPLOYMENT_NAME,
    collision: str = DEFAULT_COLLISION,
    paused: bool = False,
) -> None:
    """Create (or update) the deployment and run its flow runs until interrupted.

    On shutdown the schedule is paused (Prefect's default), so no runs pile up while nothing
    serves them; the next `serve` resumes it.
    """
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    from flows.pipeline import mnist_pipeline

    root = Path(root).resolve()
    os.chdir(root)  # flow runs start in the workspace; DVC and the stage commands expect it
    mnist_pipeline.serve(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        paused=paused,
        global_limit=concurrency(collision),
        parameters=deployment_parameters(root),
        description=f"The MNIST pipeline on {root}: dvc pull, the five stages, the run record, dvc push.",
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,  # the installed package, wherever serve starts
    )


def check_api_url() -> str:
    """serve needs a real server: without PREFECT_API_URL, Prefect would start a throwaway one."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise RuntimeError(
            "PREFECT_API_URL is not set: start a server (`prefect server start --host 127.0.0.1`) and "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` first"
        )
    return url
