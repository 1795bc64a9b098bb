"""The lineage record: which source, data, params and code made the model in the workspace.

Every run that reaches evaluate appends one JSON line to the run log `lineage/runs.jsonl`
(workspace-local, ignored by git) and rewrites `reports/lineage.json`, the current model's
record. A record holds digests, params, the git commit, the run (trigger and flow-run id) and
the metrics; never the environment, and URLs lose their credentials.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import subprocess
from pathlib import Path

from tasks.errors import redact
from tasks.io import write_json, write_text
from tasks.lineage_card import render_card
from tasks.lineage_dvc import cached_manifest, code_paths, hash_paths, load_yaml, lock_outs, pipeline

RUN_LOG = Path("lineage/runs.jsonl")
LINEAGE = Path("reports/lineage.json")
CARD = Path("reports/model_card.md")
MODEL = "models/model.keras"
DATA = {"raw": "data/raw", "processed": "data/processed"}
RECORD_VERSION = 1
ENV_TRIGGER, ENV_RUN_ID, ENV_STAGES = "MNIST_RUN_TRIGGER", "MNIST_RUN_ID", "MNIST_STAGES_RUN"
SELF_OUTPUTS = {LINEAGE.as_posix(), CARD.as_posix()}  # evaluate's own outputs cannot hold their own digest


def read_json_safe(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def git_state(root: Path) -> dict:
    """Commit and dirty flag; dvc.lock is left out, since every run rewrites it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain=v1", "--untracked-files=normal")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "changed": []}
    changed = [line[3:] for line in status.splitlines() if line[3:] != "dvc.lock"]
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:50]}


def _locked_folder(root: Path, out: str, entry: dict | None) -> dict | None:
    """dvc.lock's hash and DVC's cached file list for a folder whose file count and size still match."""
    folder = root / out
    if not entry or not folder.is_dir():
        return None
    manifest = cached_manifest(root, entry.get("md5", ""))
    files = [p for p in folder.rglob("*") if p.is_file()]
    if not manifest or len(files) != len(manifest) or sum(p.stat().st_size for p in files) != entry.get("size"):
        return None
    return {"md5": entry["md5"], "files": manifest}


def artifact_digests(root: Path, stages: dict, lock: dict, hash_dirs: bool = False) -> dict[str, dict]:
    """{out: {"stage", "md5", "files" (folders)}}. A folder DVC has just hashed in this run takes
    dvc.lock's hash unless hash_dirs; files are always hashed (`lineage verify` rehashes all)."""
    locked, result, todo = lock_outs(lock), {}, []
    for stage, spec in stages.items():
        for out in (o for o in spec["outs"] if o not in SELF_OUTPUTS):
            reused = None if hash_dirs else _locked_folder(root, out, locked.get(out))
            if reused:
                result[out] = {"stage": stage, **reused}
            else:
                todo.append((stage, out))
    hashed = hash_paths(root, [out for _, out in todo])
    for stage, out in todo:
        info = hashed[out] or {}
        result[out] = {"stage": stage, "md5": info.get("md5"), **({"files": info["files"]} if "files" in info else {})}
    order = [o for spec in stages.values() for o in spec["outs"]]
    return {out: result[out] for out in order if out in result}  # in pipeline order


def build_record(
    root: Path, trigger: str, run_id: str | None, stages_run: list[str], *, hash_dirs: bool = False
) -> dict:
    """The lineage of what the workspace holds now, read from its files and dvc.lock."""
    root = Path(root)
    stages, lock = pipeline(root), load_yaml(root / "dvc.lock")
    ingest, validation = read_json_safe(root / "reports/ingest.json"), read_json_safe(root / "reports/validation.json")
    metrics = read_json_safe(root / "reports/metrics.json")
    artifacts = artifact_digests(root, stages, lock, hash_dirs)
    code = hash_paths(root, code_paths(stages))
    record = {
        "record_version": RECORD_VERSION,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "trigger": trigger,
        "run_id": run_id,
        "stages_run": list(stages_run),
        "git": git_state(root),
        "source": ingest.get("source", {}) | ({"fetched_at": ingest["fetched_at"]} if "fetched_at" in ingest else {}),
        "raw_arrays": {name: a.get("sha256") for name, a in ingest.get("arrays", {}).items()},
        "data_md5": {k: (artifacts.get(p) or {}).get("md5") for k, p in DATA.items()},
        "model_md5": (artifacts.get(MODEL) or {}).get("md5"),
        "artifacts": artifacts,
        "code": {p: info and info["md5"] for p, info in code.items()},
        "params": load_yaml(root / "params.yaml"),
        "schema_version": validation.get("schema_version"),
        "validation": {k: validation.get(k) for k in ("passed", "checks", "samples", "class_counts", "pixels")},
        "metrics": {k: metrics.get(k) for k in ("test_accuracy", "test_loss", "macro_f1", "test_samples")},
    }
    return redact(record)


def read_runs(root: Path) -> list[dict]:
    """Every record in the run log, oldest first; a torn last line (killed writer) is skipped."""
    try:
        lines = (Path(root) / RUN_LOG).read_text().splitlines()
    except FileNotFoundError:
        return []
    runs = []
    for line in lines:
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue
    return runs


def append_run(root: Path, record: dict) -> None:
    """One write of one line, under an exclusive lock, then fsync: concurrent runs never interleave."""
    path = Path(root) / RUN_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def record_run(
    root: Path, trigger: str, run_id: str | None, stages_run: list[str], *, write_lineage: bool | None = None
) -> dict:
    """Append this run's record to the run log; rewrite reports/lineage.json when evaluate ran
    (it is evaluate's DVC output: rewriting it after a skipped run would make `dvc status` dirty)."""
    root = Path(root)
    record = build_record(root, trigger, run_id, stages_run)
    runs = read_runs(root)
    before = runs[-1].get("artifacts", {}) if runs else {}
    record["changed_since_previous"] = sorted(
        p for p, a in record["artifacts"].items() if (before.get(p) or {}).get("md5") != a.get("md5")
    )
    append_run(root, record)
    if write_lineage if write_lineage is not None else "evaluate" in stages_run:
        write_json(root / LINEAGE, record)
    return record


def run_context(env: dict[str, str]) -> tuple[str, str | None, list[str]]:
    """(trigger, run id, stages run) from the environment; `dvc exp run` names its experiment."""
    trigger = env.get(ENV_TRIGGER) or ("dvc exp run" if env.get("DVC_EXP_NAME") else "dvc repro")
    run_id = env.get(ENV_RUN_ID) or (env.get("DVC_EXP_NAME") if ENV_TRIGGER not in env else None) or None
    stages = [s.strip() for s in env.get(ENV_STAGES, "evaluate").split(",") if s.strip()]
    return trigger, run_id, stages


def current_lineage(root: Path) -> dict:
    """The latest record of the model now in the workspace, else one rebuilt from its files."""
    root = Path(root)
    model = hash_paths(root, [MODEL])[MODEL]
    md5 = model and model["md5"]
    for record in reversed(read_runs(root)):
        if md5 and record.get("model_md5") == md5:
            return {**record, "lineage_source": RUN_LOG.as_posix()}
    saved = read_json_safe(root / LINEAGE)
    if md5 and saved.get("model_md5") == md5:
        return {**saved, "lineage_source": LINEAGE.as_posix()}
    return {**build_record(root, "unknown", None, []), "lineage_source": "workspace files"}


def record_evaluate(root: Path, env: dict[str, str] | None = None) -> dict:
    """evaluate's last step: log this run, rewrite reports/lineage.json and reports/model_card.md."""
    trigger, run_id, stages = run_context(dict(os.environ) if env is None else env)
    record = record_run(root, trigger, run_id, stages, write_lineage=True)
    write_text(Path(root) / CARD, render_card(record, read_json_safe(Path(root) / "reports/metrics.json")))
    return record
