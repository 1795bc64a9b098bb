"""`mnist-pipeline lineage` end to end: a real `dvc repro` on tiny synthetic data in a temporary git + DVC
repository, built once per session and copied for each test, then tampered with in every way we know."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.lineage_cli import main
from tests.repo_factory import dvc, make_repo, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("lineage") / "repo")
    dvc(root, "repro")
    return root


@pytest.fixture
def repo(built, tmp_path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(built, root, symlinks=True)
    return root


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["lineage", *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys, *args: str) -> tuple[int, dict]:
    code, out, _ = cli(capsys, *args, "--json")
    return code, json.loads(out)


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(data)


def set_param(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_fresh_run_verifies_and_dvc_status_is_clean(repo, capsys):
    code, out, _ = cli(capsys, "verify", "--root", str(repo))
    assert code == 0, out
    assert "verify OK: 0 error(s)" in out
    _, result = cli_json(capsys, "verify", "--root", str(repo))
    assert result["ok"] and not result["errors"] and result["lineage_source"] == "reports/lineage.json"
    assert {a["path"] for a in result["artifacts"]} >= {"models/model.keras", "data/raw", "reports/lineage.json"}
    assert all(a["status"] == "ok" for a in result["artifacts"])
    assert "up to date" in dvc(repo, "status").stdout  # the lineage outputs are what dvc.lock says
    assert (repo / "reports/model_card.md").read_text().startswith("# Model card")


def test_one_flipped_byte_in_the_model_fails_verify_naming_it(repo, capsys):
    flip_byte(repo / "models/model.keras")
    code, out, _ = cli(capsys, "verify", "--root", str(repo))
    assert code == 1
    assert "models/model.keras: changed" in out and "verify FAILED" in out
    _, result = cli_json(capsys, "verify", "--root", str(repo))
    assert {e["path"] for e in result["errors"]} == {"models/model.keras"}


def test_an_edited_model_committed_to_dvc_lock_is_still_caught(repo, capsys):
    flip_byte(repo / "models/model.keras")
    dvc(repo, "commit", "--force")  # dvc.lock now agrees with the edited file
    code, result = cli_json(capsys, "verify", "--root", str(repo))
    assert code == 1
    problems = {(e["path"], e["problem"]) for e in result["errors"]}
    assert ("models/model.keras", "not produced by the recorded run") in problems
    assert not any(e["problem"] == "changed" for e in result["errors"])


def test_a_hand_edited_lineage_record_is_caught_by_the_run_log(repo, capsys):
    path = repo / "reports/lineage.json"
    record = json.loads(path.read_text())
    record["metrics"]["test_accuracy"] = 0.999
    path.write_text(json.dumps(record, indent=2))
    dvc(repo, "commit", "--force")
    code, result = cli_json(capsys, "verify", "--root", str(repo))
    assert code == 1 and [(e["path"], e["problem"]) for e in result["errors"]] == [("reports/lineage.json", "edited")]
    record["time"] = "2030-01-01T00:00:00+00:00"  # a made-up run
    path.write_text(json.dumps(record, indent=2))
    dvc(repo, "commit", "--force")
    _, result = cli_json(capsys, "verify", "--root", str(repo))
    assert [e["problem"] for e in result["errors"]] == ["not in the run log"]


def test_tampered_processed_data_breaks_the_chain(repo, capsys):
    flip_byte(repo / "data/processed/x_test.npy", offset=200)
    dvc(repo, "commit", "--force", "preprocess")  # only preprocess's record follows the edit
    code, result = cli_json(capsys, "verify", "--root", str(repo))
    assert code == 1
    problems = {(e["path"], e["problem"]) for e in result["errors"]}
    assert ("data/processed/x_test.npy", "broken chain") in problems
    assert ("data/processed", "not produced by the recorded run") in problems


def test_missing_artifact_and_unpinned_raw_data_are_named(repo, capsys):
    (repo / "reports/metrics.json").unlink()
    set_param(repo, "ingest", "digests", {**yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["digests"],
                                          "y_test": "0" * 64})  # fmt: skip
    code, result = cli_json(capsys, "verify", "--root", str(repo))
    assert code == 1
    problems = {(e["path"], e["problem"]) for e in result["errors"]}
    assert problems == {("reports/metrics.json", "missing"), ("data/raw/y_test.npy", "not the pinned data")}
    assert any(w["path"] == "params.yaml:ingest.digests.y_test" for w in result["warnings"])  # stale, not tampered


def test_a_changed_param_is_a_warning_until_strict(repo, capsys):
    set_param(repo, "train", "epochs", 3)
    code, result = cli_json(capsys, "verify", "--root", str(repo))
    assert code == 0 and [w["path"] for w in result["warnings"]] == ["params.yaml:train.epochs"]
    assert cli(capsys, "verify", "--strict", "--root", str(repo))[0] == 1


def test_param_change_and_rerun_shows_two_runs_with_the_difference(repo, capsys):
    set_param(repo, "train", "epochs", 2)
    dvc(repo, "repro")
    code, result = cli_json(capsys, "history", "--root", str(repo))
    runs = result["runs"]
    assert code == 0 and len(runs) == 2
    assert runs[1]["params_changed"] == {"train.epochs": [1, 2]}
    assert runs[0]["model_md5"] != runs[1]["model_md5"]
    assert runs[0]["data_md5"] == runs[1]["data_md5"]
    code, out, _ = cli(capsys, "history", "--root", str(repo))
    assert "train.epochs: 1 -> 2" in out and out.count("dvc repro") == 2
    # forwards from the data: both models came from the same raw data
    _, forward = cli_json(capsys, "history", "--data", str(repo / "data/raw"), "--root", str(repo))
    assert {m["model_md5"] for m in forward["models"]} == {r["model_md5"] for r in runs}
    prefix = runs[0]["raw_arrays"]["x_train"][:10]
    _, by_digest = cli_json(capsys, "history", "--data", prefix, "--root", str(repo))
    assert len(by_digest["models"]) == 2
    assert cli(capsys, "verify", "--root", str(repo))[0] == 0


def test_trace_finds_a_copied_model_and_prints_its_chain(repo, tmp_path, capsys):
    copy = tmp_path / "elsewhere" / "renamed.keras"
    copy.parent.mkdir()
    shutil.copy(repo / "models/model.keras", copy)
    lineage = json.loads((repo / "reports/lineage.json").read_text())
    code, out, _ = cli(capsys, "trace", str(copy), "--root", str(repo))
    assert code == 0, out
    assert "models/model.keras (stage train)" in out
    for digest in [*lineage["raw_arrays"].values(), lineage["data_md5"]["raw"], lineage["data_md5"]["processed"]]:
        assert digest in out
    assert "schema version 1, passed" in out and "made by dvc repro" in out
    _, result = cli_json(capsys, "trace", str(copy), "--root", str(repo))
    assert result["lineage"]["model_md5"] == result["digests"]["md5"] == lineage["model_md5"]
    assert result["made_by"]["trigger"] == "dvc repro"


def test_trace_finds_a_data_file_and_refuses_an_unknown_one(repo, tmp_path, capsys):
    code, result = cli_json(capsys, "trace", str(repo / "data/raw/x_train.npy"), "--root", str(repo))
    assert code == 0 and {"artifact": "data/raw/x_train.npy", "stage": "ingest"} in result["matches"]
    stranger = tmp_path / "model.keras"
    stranger.write_bytes(b"not ours")
    code, _, err = cli(capsys, "trace", str(stranger), "--root", str(repo))
    assert code == 1 and "matches nothing" in err
    assert cli(capsys, "trace", str(tmp_path / "absent"), "--root", str(repo))[0] == 2


def test_a_prefect_run_is_recorded_with_its_flow_run_id(repo, capsys):
    run([sys.executable, "-m", "dvc", "repro", "--force", "evaluate"], repo,
        MNIST_RUN_TRIGGER="prefect", MNIST_RUN_ID="0b5e-flow-run", MNIST_STAGES_RUN="evaluate")  # fmt: skip
    _, result = cli_json(capsys, "history", "--root", str(repo))
    last = result["runs"][-1]
    assert (last["trigger"], last["run_id"], last["params_changed"]) == ("prefect", "0b5e-flow-run", {})
    _, trace = cli_json(capsys, "trace", str(repo / "models/model.keras"), "--root", str(repo))
    assert trace["made_by"]["trigger"] == trace["lineage"]["trigger"] == "dvc repro"  # the run that trained it
    assert trace["latest"]["run_id"] == "0b5e-flow-run"
    assert cli(capsys, "verify", "--root", str(repo))[0] == 0


def test_card_on_demand(repo, tmp_path, capsys):
    code, out, _ = cli(capsys, "card", "--root", str(repo), "-o", str(tmp_path / "card.md"))
    assert code == 0 and out.startswith("# Model card") and "| class | precision | recall | F1 | support |" in out
    assert (tmp_path / "card.md").read_text().rstrip() == out.rstrip()
    _, result = cli_json(capsys, "card", "--root", str(repo))
    assert result["lineage"]["model_md5"] in result["markdown"]


def test_console_command_starts_without_tensorflow_or_prefect(repo):
    probe = (
        "import sys; from flows.cli import main; code = main(['lineage', 'verify', '--root', sys.argv[1]]);"
        "heavy = [m for m in ('tensorflow', 'keras', 'prefect', 'dvc') if m in sys.modules];"
        "sys.exit(code or (3 if heavy else 0))"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(repo)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
