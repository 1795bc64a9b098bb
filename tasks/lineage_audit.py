"""`lineage verify`: every workspace artifact against dvc.lock, the stage chain, the pinned data and
the recorded lineage. Each finding names the artifact; errors make verify fail, warnings (a stage
that `dvc repro` would rerun, a missing run log) do not.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tasks.io import sha256_array
from tasks.lineage import LINEAGE, RUN_LOG, SELF_OUTPUTS, read_json_safe, read_runs
from tasks.lineage_dvc import cached_manifest, code_paths, hash_paths, is_inside, load_yaml, lock_outs, pipeline


def recorded_lineage(root: Path) -> tuple[dict | None, str | None]:
    """reports/lineage.json, else the last record of the run log."""
    saved = read_json_safe(root / LINEAGE)
    if saved:
        return saved, LINEAGE.as_posix()
    runs = read_runs(root)
    return (runs[-1], RUN_LOG.as_posix()) if runs else (None, None)


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<absent>"
        node = node[part]
    return node


def _differences(key: str, was, now) -> dict[str, tuple]:
    """{dotted key: (was, now)} down to the leaves that differ."""
    if isinstance(was, dict) and isinstance(now, dict):
        out: dict[str, tuple] = {}
        for k in sorted(set(was) | set(now), key=str):
            out |= _differences(f"{key}.{k}", was.get(k, "<absent>"), now.get(k, "<absent>"))
        return out
    return {} if was == now else {key: (was, now)}


class Report:
    def __init__(self) -> None:
        self.errors: list[dict] = []
        self.warnings: list[dict] = []

    def error(self, path: str, problem: str, detail: str) -> None:
        self.errors.append({"path": path, "problem": problem, "detail": detail})

    def warn(self, path: str, problem: str, detail: str) -> None:
        self.warnings.append({"path": path, "problem": problem, "detail": detail})


def _check_artifacts(root, report, stages, locked, hashes, record, origin) -> list[dict]:
    rows, recorded = [], (record or {}).get("artifacts", {})
    declared = {o: s for s, spec in stages.items() for o in spec["outs"]}
    for path in [*declared, *(p for p in locked if p not in declared)]:
        entry, have, rec = locked.get(path), hashes.get(path), recorded.get(path)
        stage = (entry or {}).get("stage") or declared.get(path)
        ws_md5, lock_md5, rec_md5 = have and have["md5"], entry and entry.get("md5"), rec and rec.get("md5")
        status = "ok"
        if entry is None:
            status = "not in dvc.lock"
            report.warn(path, status, f"declared by stage {stage} in dvc.yaml but never locked: run `dvc repro`")
        elif have is None:
            status = "missing"
            report.error(path, status, f"in dvc.lock (stage {stage}) but not in the workspace: `dvc checkout` or repro")
        elif ws_md5 != lock_md5:
            status = "changed"
            report.error(path, status, f"md5 {ws_md5} differs from dvc.lock's {lock_md5} (stage {stage})")
        if rec_md5 and ws_md5 and rec_md5 != ws_md5 and path not in SELF_OUTPUTS:
            status = "not the recorded run's" if status == "ok" else status
            hint = " dvc.lock agrees with the workspace: edited and then `dvc commit`ed?" if ws_md5 == lock_md5 else ""
            report.error(
                path,
                "not produced by the recorded run",
                f"md5 {ws_md5}, but {origin} (run {record.get('time')}, {record.get('trigger')}) recorded "
                f"{rec_md5} from stage {stage}.{hint}",
            )
        row = {"path": path, "stage": stage, "workspace": ws_md5, "dvc_lock": lock_md5, "recorded": rec_md5}
        rows.append(row | {"status": status})
    return rows


def _check_chain(root, report, lock, locked, hashes) -> None:
    """Each stage's recorded deps must be the recorded outs of the stage upstream."""
    params = load_yaml(root / "params.yaml")
    for stage, entry in lock.get("stages", {}).items():
        for dep in entry.get("deps", []):
            path, md5 = dep["path"], dep.get("md5")
            producer = next((o for o in locked if is_inside(path, o)), None)
            if producer is None:
                have = hashes.get(path)
                if have is None or have["md5"] != md5:
                    report.warn(path, "stale", f"changed since stage {stage} last ran; `dvc repro` will rerun it")
                continue
            out = locked[producer]
            if path == producer:
                upstream = out.get("md5")
            else:
                manifest = cached_manifest(root, out.get("md5", ""))
                have = hashes.get(producer)
                if manifest is None and have and have["md5"] == out.get("md5"):
                    manifest = have.get("files")
                if manifest is None:
                    report.warn(path, "chain unchecked", f"no file list for {producer} in the DVC cache")
                    continue
                upstream = manifest.get(Path(path).relative_to(producer).as_posix())
            if upstream != md5:
                report.error(
                    path,
                    "broken chain",
                    f"stage {stage} used md5 {md5}, but stage {out['stage']} recorded {upstream} for it",
                )
        for file, values in (entry.get("params") or {}).items():
            current = params if file == "params.yaml" else load_yaml(root / file)
            for key, used in values.items():
                for sub, (was, now) in _differences(key, used, _lookup(current, key)).items():
                    report.warn(f"{file}:{sub}", "stale", f"stage {stage} ran with {was!r}, {file} now has {now!r}")


def _check_raw(root, report, record) -> None:
    """data/raw must still hold the MNIST pinned in params.yaml (and the arrays the record names)."""
    pinned = load_yaml(root / "params.yaml").get("ingest", {}).get("digests", {})
    recorded = (record or {}).get("raw_arrays", {})
    for name, digest in pinned.items():
        path = root / "data/raw" / f"{name}.npy"
        if not path.is_file():
            continue  # reported as missing with data/raw
        try:
            got = sha256_array(np.load(path, mmap_mode="r", allow_pickle=False))
        except ValueError as exc:
            report.error(f"data/raw/{name}.npy", "unreadable", str(exc))
            continue
        if got != digest:
            report.error(f"data/raw/{name}.npy", "not the pinned data", f"array sha256 {got}, pinned {digest}")
        if recorded.get(name) and recorded[name] != got:
            report.error(
                f"data/raw/{name}.npy", "not the recorded data", f"array sha256 {got}, recorded {recorded[name]}"
            )


def _check_record(root, report, record, origin) -> None:
    if record is None:
        report.warn(
            LINEAGE.as_posix(), "no lineage record", "neither reports/lineage.json nor a run log: run `dvc repro`"
        )
        return
    runs = read_runs(root)
    if origin != LINEAGE.as_posix() or not runs:
        if not runs:
            report.warn(RUN_LOG.as_posix(), "no run log", "workspace-local and not versioned (fresh clone?)")
        return
    same = [r for r in runs if r.get("time") == record.get("time") and r.get("run_id") == record.get("run_id")]
    if not same:
        report.error(origin, "not in the run log", f"{RUN_LOG} has no run at {record.get('time')}: not made here")
    elif all(r != record for r in same):
        report.error(origin, "edited", f"differs from the run log's record of the run at {record.get('time')}")


def verify(root: Path) -> dict:
    """Recompute every digest; {"ok", "errors", "warnings", "artifacts", "lineage_source", "seconds"}."""
    started, root, report = time.perf_counter(), Path(root), Report()
    lock, stages = load_yaml(root / "dvc.lock"), pipeline(root)
    if not lock.get("stages"):
        report.error("dvc.lock", "missing", "no dvc.lock: nothing was recorded yet; run `dvc repro`")
    locked = lock_outs(lock)
    outs = {o for spec in stages.values() for o in spec["outs"]} | set(locked)
    hashes = hash_paths(root, sorted(outs | set(code_paths(stages))))
    record, origin = recorded_lineage(root)
    rows = _check_artifacts(root, report, stages, locked, hashes, record, origin)
    _check_chain(root, report, lock, locked, hashes)
    _check_raw(root, report, record)
    _check_record(root, report, record, origin)
    return {
        "ok": not report.errors,
        "errors": report.errors,
        "warnings": report.warnings,
        "artifacts": rows,
        "lineage_source": origin,
        "recorded_run": record and {k: record.get(k) for k in ("time", "trigger", "run_id")},
        "seconds": round(time.perf_counter() - started, 3),
    }
