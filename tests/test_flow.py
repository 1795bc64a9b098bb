"""The Prefect flow end to end on tiny synthetic data, in a temporary git + DVC repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.repo_factory import dvc, make_repo

pytestmark = pytest.mark.slow
STAGES = ["ingest", "validate", "preprocess", "train", "evaluate"]


@pytest.fixture(scope="module")
def harness():
    """A temporary Prefect API; the flow's stages run on the synthetic npz, so no MNIST_MIRROR override."""
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch, prefect_test_harness(server_startup_timeout=120):
        patch.delenv("MNIST_MIRROR", raising=False)
        yield


def task_states(flow_state) -> dict[str, str]:
    """Task name -> state name of one flow run, read back from the Prefect API."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def artifacts(flow_state) -> dict[str, object]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: a.data for a in found}


def run_flow(root: Path, **kwargs):
    from flows.pipeline import mnist_pipeline

    return mnist_pipeline(root=str(root), return_state=True, **kwargs)


def lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())


@pytest.fixture(scope="module")
def flow_repo(tmp_path_factory, harness) -> tuple[Path, object]:
    root = make_repo(tmp_path_factory.mktemp("flow") / "repo")
    return root, run_flow(root)


def test_first_run_completes_every_stage_in_dvc_order(flow_repo):
    root, state = flow_repo
    assert state.is_completed(), state.message
    assert state.result()["stages_run"] == STAGES
    assert task_states(state) == dict.fromkeys(STAGES, "Completed")
    assert "Data and pipelines are up to date" in dvc(root, "status").stdout


def test_artifacts_hold_metrics_and_lineage(flow_repo):
    root, state = flow_repo
    found = artifacts(state)
    metrics = json.loads((root / "reports/metrics.json").read_text())
    table = json.loads(found["mnist-metrics"]) if isinstance(found["mnist-metrics"], str) else found["mnist-metrics"]
    overall = next(row for row in table if row["class"] == "all")
    assert overall["accuracy"] == metrics["test_accuracy"]
    assert len(table) == 11
    lineage = found["mnist-lineage"]
    model_md5 = next(o["md5"] for o in lock(root)["stages"]["train"]["outs"] if o["path"] == "models/model.keras")
    assert model_md5 in lineage
    assert "train.epochs" in lineage or "epochs" in lineage


def test_second_run_skips_every_stage_and_keeps_the_lock(flow_repo):
    root, _ = flow_repo
    before = (root / "dvc.lock").read_bytes()
    state = run_flow(root)
    assert state.is_completed(), state.message
    assert state.result()["stages_run"] == []
    assert task_states(state) == dict.fromkeys(STAGES, "Skipped")
    assert (root / "dvc.lock").read_bytes() == before
    assert "Data and pipelines are up to date" in dvc(root, "status").stdout


def test_lock_matches_what_dvc_repro_writes(flow_repo, tmp_path):
    root, _ = flow_repo
    twin = make_repo(tmp_path / "twin", ingest={"npz_path": str(root.parent / "repo-mnist.npz")})
    dvc(twin, "repro")
    ours, theirs = lock(root)["stages"], lock(twin)["stages"]
    assert list(ours) == list(theirs) == STAGES
    for stage in ("ingest", "validate", "preprocess", "train"):
        assert ours[stage]["params"] == theirs[stage]["params"]
        assert [o["md5"] for o in ours[stage]["outs"]] == [o["md5"] for o in theirs[stage]["outs"]], stage
    assert ours["evaluate"]["deps"] == theirs["evaluate"]["deps"]


def test_epochs_override_reruns_train_and_evaluate_only_and_is_recorded(flow_repo):
    root, _ = flow_repo
    state = run_flow(root, epochs=2)
    assert state.is_completed(), state.message
    assert state.result()["stages_run"] == ["train", "evaluate"]
    states = task_states(state)
    assert [s for s in STAGES if states[s] == "Completed"] == ["train", "evaluate"]
    assert yaml.safe_load((root / "params.yaml").read_text())["train"]["epochs"] == 2
    assert lock(root)["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 2
    assert "Data and pipelines are up to date" in dvc(root, "status").stdout


def test_bad_override_fails_before_any_stage(flow_repo):
    root, _ = flow_repo
    before = (root / "params.yaml").read_text()
    state = run_flow(root, overrides={"train.epochz": 3})
    assert state.is_failed()
    assert "train.epochz: unknown key" in state.message
    assert (root / "params.yaml").read_text() == before
    assert task_states(state) == {}


def test_failing_stage_fails_the_flow_with_its_message_and_stops(tmp_path, harness):
    root = make_repo(tmp_path / "repo", ingest={"digests": {"x_train": "0" * 64}})
    state = run_flow(root)
    assert state.is_failed()
    assert "digest mismatch for x_train" in state.message
    states = task_states(state)
    assert states["ingest"] == "Failed"
    assert set(states) == {"ingest"}
    assert not (root / "data/raw").exists()


def test_ingest_task_retries_a_transient_network_failure(tmp_path, harness, http_server):
    from tests.conftest import Reply, make_arrays, npz_bytes, sha256

    body = npz_bytes(make_arrays())
    url = http_server.serve("/mnist.npz", Reply(status=503), body)
    root = make_repo(
        tmp_path / "repo", ingest={"source": "keras", "url": url, "url_sha256": sha256(body), "retries": 0}
    )
    state = run_flow(root)
    assert state.is_completed(), state.message
    assert http_server.hits["/mnist.npz"] == 2  # the stage gave up after one try (retries: 0); the task retried it
    assert state.result()["stages_run"] == STAGES
