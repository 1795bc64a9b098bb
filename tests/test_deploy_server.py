"""The scheduled deployment against real parts: a Prefect server (loopback, SQLite, temporary
home), `mnist-pipeline serve`, DVC with a local remote, on tiny synthetic data in a temporary
copy of the repository.

One run is triggered through the CLI, a second through the API while the first is running:
the second must wait for the concurrency slot (ENQUEUE), start only after the first ended,
skip every stage, and both must leave their record in lineage/runs.jsonl. Afterwards the
workspace is up to date, the remote holds everything, and a fresh clone restores it with
`dvc pull`. Every process started here is killed in teardown, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from flows.deploy import DEFAULT_CRON, DEPLOYMENT_NAME
from tests.repo_factory import make_repo

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FLOW = "mnist-pipeline"
STAGES = ["ingest", "validate", "preprocess", "train", "evaluate"]
SERVER_START_S = 90  # first start migrates a new SQLite database
RUN_TIMEOUT_S = 240


# ---------------------------------------------------------------- the workspace


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def workspace(tmp_path) -> Path:
    """tmp/ws: the project on synthetic data, with this repository's committed dvc.lock, whose
    outputs its DVC remote (../mnist-dvc-remote, so tmp/mnist-dvc-remote) does not hold yet:
    a fresh clone's first deployment run against an empty remote."""
    root = make_repo(tmp_path / "ws")
    shutil.copy2(REPO / "dvc.lock", root / "dvc.lock")
    git(root, "add", "dvc.lock")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "the committed dvc.lock")
    return root


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process, its group and every descendant (flow runs start their own sessions), then SIGKILL."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def listening(pid: int) -> set[str]:
    """The addresses a process and its children listen on."""
    import psutil

    family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in family for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


@pytest.fixture
def prefect_env(tmp_path) -> dict[str, str]:
    """A private Prefect: temporary home and SQLite database, on loopback; no real MNIST mirror."""
    port = free_port()
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "MNIST_MIRROR"}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        # test speed: retry a run waiting for the concurrency slot every 3 s (default 30 s), poll every 2 s
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest.fixture
def prefect_server(tmp_path, prefect_env) -> Iterator[tuple[str, float, int]]:
    """(API URL, seconds until /api/health answered, pid)."""
    log = tmp_path / "server.log"
    port = prefect_env["PREFECT_SERVER_API_PORT"]
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port]
    started = time.monotonic()
    proc = start(cmd, tmp_path, prefect_env, log)
    try:
        url = prefect_env["PREFECT_API_URL"]
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() - started > SERVER_START_S:
                pytest.fail(f"prefect server did not come up:\n{tail(log)}")
            time.sleep(0.25)
        yield url, time.monotonic() - started, proc.pid
    finally:
        stop(proc)


@pytest.fixture
def served(tmp_path, workspace, prefect_env, prefect_server) -> Iterator[dict]:
    """`mnist-pipeline serve` on the workspace; yields the deployment once the server knows it."""
    url, _, _ = prefect_server
    log = tmp_path / "serve.log"
    proc = start([sys.executable, "-m", "flows.cli", "serve", "--root", str(workspace)], workspace, prefect_env, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            reply = httpx.get(f"{url}/deployments/name/{FLOW}/{DEPLOYMENT_NAME}", timeout=5)
            if reply.status_code == 200:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serve did not create the deployment:\n{tail(log)}")
            time.sleep(0.5)
        yield {"deployment": reply.json(), "log": log, "url": url}
    finally:
        stop(proc)


# ---------------------------------------------------------------- the API


def flow_run(url: str, run_id: str) -> dict:
    return httpx.get(f"{url}/flow_runs/{run_id}", timeout=10).json()


def state_history(url: str, run_id: str) -> list[dict]:
    states = httpx.get(f"{url}/flow_run_states/", params={"flow_run_id": run_id}, timeout=10).json()
    return sorted(states, key=lambda s: s["timestamp"])


def task_states(url: str, run_id: str) -> dict[str, str]:
    body = {"flow_runs": {"id": {"any_": [run_id]}}}
    runs = httpx.post(f"{url}/task_runs/filter", json=body, timeout=10).json()
    return {r["name"].rsplit("-", 1)[0]: r["state"]["name"] for r in runs}


def wait_for(url: str, run_id: str, names: set[str], log: Path, timeout: float = RUN_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = flow_run(url, run_id)
        if run["state"]["name"] in names:
            return run
        if run["state"]["type"] in {"FAILED", "CRASHED", "CANCELLED"}:
            pytest.fail(f"flow run {run_id} ended {run['state']['name']}: {run['state']['message']}\n{tail(log)}")
        time.sleep(0.5)
    pytest.fail(f"flow run {run_id} still {run['state']['name']} after {timeout}s\n{tail(log)}")


def trigger_cli(env: dict[str, str], cwd: Path) -> str:
    """`prefect deployment run`, as docs/deployment.md tells a newcomer to; returns the flow-run id."""
    cmd = [str(BIN / "prefect"), "deployment", "run", f"{FLOW}/{DEPLOYMENT_NAME}"]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)


def trigger_api(url: str, deployment_id: str) -> str:
    reply = httpx.post(f"{url}/deployments/{deployment_id}/create_flow_run", json={}, timeout=10)
    reply.raise_for_status()
    return reply.json()["id"]


def dvc(cwd: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=True
    ).stdout


def runs_log(root: Path) -> dict[str, dict]:
    path = root / "lineage/runs.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {r["run_id"]: r for r in records if r.get("run_id")}


def outputs(root: Path) -> tuple[list[str], list[str]]:
    """dvc.yaml's outputs (outs, metrics, plots): (cached, marked `cache: false`)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values()
    entries = [e for s in stages for kind in ("outs", "metrics", "plots") for e in s.get(kind, [])]
    specs = [next(iter(e.items())) if isinstance(e, dict) else (e, {}) for e in entries]
    return [p for p, o in specs if o.get("cache", True)], [p for p, o in specs if not o.get("cache", True)]


def first_time(history: list[dict], state_type: str) -> str:
    return next(s["timestamp"] for s in history if s["type"] == state_type)


def last_time(history: list[dict], state_type: str) -> str:
    return [s["timestamp"] for s in history if s["type"] == state_type][-1]


# ---------------------------------------------------------------- the test


def test_scheduled_deployment_runs_one_at_a_time_and_records_each_run(
    tmp_path, workspace, prefect_env, prefect_server, served
):
    url, server_start_s, server_pid = prefect_server
    assert listening(server_pid) == {"127.0.0.1"}, "the Prefect server must listen on loopback only"
    deployment, log = served["deployment"], served["log"]

    # the deployment as defined: nightly cron, one run at a time (enqueue), pull and push
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [DEFAULT_CRON]
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert deployment["parameters"] == {"root": str(workspace.resolve()), "pull": True, "push": True}

    # run A through the CLI; run B through the API while A is running
    triggered = time.monotonic()
    run_a = trigger_cli(prefect_env, tmp_path)
    wait_for(url, run_a, {"Running", "Completed"}, log)
    assert flow_run(url, run_a)["state"]["name"] == "Running", "run A finished before run B could overlap it"
    run_b = trigger_api(url, deployment["id"])

    seen_b: set[str] = set()
    while flow_run(url, run_a)["state"]["type"] not in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
        seen_b.add(flow_run(url, run_b)["state"]["name"])
        time.sleep(0.3)
    a_done = wait_for(url, run_a, {"Completed"}, log)
    a_seconds = time.monotonic() - triggered
    b_done = wait_for(url, run_b, {"Completed"}, log)
    b_seconds = time.monotonic() - triggered

    # B waited for the slot and ran only after A ended: never two runs in the workspace at once
    history_a, history_b = state_history(url, run_a), state_history(url, run_b)
    assert "AwaitingConcurrencySlot" in {s["name"] for s in history_b} | seen_b
    assert "Running" not in seen_b
    assert first_time(history_b, "RUNNING") >= last_time(history_a, "COMPLETED")

    # A computed every stage (the remote was empty, so its pull found nothing); B skipped them all
    tasks_a, tasks_b = task_states(url, run_a), task_states(url, run_b)
    assert {stage: tasks_a[stage] for stage in STAGES} == dict.fromkeys(STAGES, "Completed"), tasks_a
    assert tasks_a["dvc-pull"] == "Incomplete" and tasks_a["dvc-push"] == "Completed", tasks_a
    assert {stage: tasks_b[stage] for stage in STAGES} == dict.fromkeys(STAGES, "Skipped"), tasks_b
    assert tasks_b["dvc-pull"] == "Completed" and tasks_b["dvc-push"] == "Completed", tasks_b

    # each run left its record, with no human involved
    records = runs_log(workspace)
    for run_id, ran in ((run_a, STAGES), (run_b, [])):
        record = records[run_id]
        assert record["trigger"] == "prefect-deployment"
        assert record["stages_run"] == ran
        assert record["model_md5"] and record["data_md5"]["raw"] and record["data_md5"]["processed"]
        assert record["params"]["train"]["epochs"] == 1
        assert record["metrics"]["test_accuracy"] is not None
        assert record["git"]["commit"] == git(workspace, "rev-parse", "HEAD").strip()
    assert records[run_a]["model_md5"] == records[run_b]["model_md5"]

    # the workspace is consistent and the remote holds every cached output
    assert "up to date" in dvc(workspace, "status")
    assert "in sync" in dvc(workspace, "status", "--cloud")

    # a fresh clone of the run's commit restores from the remote every output DVC caches
    git(workspace, "add", "dvc.lock")
    git(workspace, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "nightly run")
    clone = tmp_path / "clone"  # beside ws, so its ../mnist-dvc-remote is the same folder
    git(tmp_path, "clone", "-q", str(workspace), str(clone))
    dvc(clone, "pull")
    cached, uncached = outputs(workspace)
    for out in cached:
        original, restored = workspace / out, clone / out
        files = [p.relative_to(original) for p in original.rglob("*") if p.is_file()] if original.is_dir() else [""]
        for rel in files:
            assert (restored / rel).read_bytes() == (original / rel).read_bytes(), f"{out}/{rel}"
    if not uncached:  # outputs marked `cache: false` never reach the remote, so only then is the clone complete
        assert "up to date" in dvc(clone, "status")

    print(
        f"\nserver up in {server_start_s:.1f}s; run A (all stages) Completed {a_seconds:.1f}s after the trigger "
        f"({_duration(a_done):.1f}s running); run B (queued, all skipped) Completed {b_seconds:.1f}s after "
        f"({_duration(b_done):.1f}s running); not in the remote (cache: false): {', '.join(uncached) or 'none'}"
    )


def _duration(run: dict) -> float:
    return run.get("total_run_time") or 0.0
