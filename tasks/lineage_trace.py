"""`lineage trace` (backwards: what made this file) and `lineage history` (every run, and forwards:
which models came from this data). Artifacts are found by content, so a copy anywhere is found too.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np

from tasks.io import sha256_array
from tasks.lineage import LINEAGE, MODEL, current_lineage, read_json_safe, read_runs
from tasks.lineage_dvc import cached_manifest, hash_path, load_yaml, lock_outs

DATA_STAGES = ("ingest", "validate", "preprocess")


def digests_of(path: Path) -> dict:
    """md5 as DVC computes it; for a file also its sha256, and for an .npy the sha256 of its array."""
    info = hash_path(Path(path))
    if info is None:
        raise FileNotFoundError(f"{path}: no such file or folder")
    out = {"md5": info["md5"]}
    if "files" not in info:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        out["sha256"] = digest.hexdigest()
        if str(path).endswith(".npy"):
            with contextlib.suppress(ValueError):  # not a plain numeric array: md5 and sha256 still identify it
                out["array_sha256"] = sha256_array(np.load(path, mmap_mode="r", allow_pickle=False))
    return out


def record_digests(record: dict) -> list[tuple[str, str, str]]:
    """(digest, artifact it identifies, stage) for everything a run record names."""
    found = [(sha, f"source {where}", "ingest") for where, sha in record.get("source", {}).get("files", {}).items()]
    found += [(sha, f"data/raw/{name}.npy (array)", "ingest") for name, sha in record.get("raw_arrays", {}).items()]
    for path, art in record.get("artifacts", {}).items():
        found.append((art.get("md5"), path, art.get("stage")))
        found += [(md5, f"{path}/{rel}", art.get("stage")) for rel, md5 in art.get("files", {}).items()]
    return [f for f in found if f[0]]


def all_records(root: Path) -> list[dict]:
    """The run log, plus reports/lineage.json if the log does not hold it (e.g. another machine's run)."""
    runs = read_runs(root)
    saved = read_json_safe(root / LINEAGE)
    if saved and not any(r.get("time") == saved.get("time") and r.get("run_id") == saved.get("run_id") for r in runs):
        runs.append(saved)
    return runs


def _lock_matches(root: Path, wanted: set[str]) -> list[dict]:
    lock, matches = load_yaml(root / "dvc.lock"), []
    for stage, entry in lock.get("stages", {}).items():
        for o in entry.get("outs", []):
            if o.get("md5") in wanted:
                matches.append({"artifact": o["path"], "stage": stage})
    for path, out in lock_outs(lock).items():
        for rel, md5 in (cached_manifest(root, out.get("md5", "")) or {}).items():
            if md5 in wanted:
                matches.append({"artifact": f"{path}/{rel}", "stage": out["stage"]})
    return matches


def _run(record: dict) -> dict:
    return {k: record.get(k) for k in ("time", "trigger", "run_id", "stages_run", "model_md5")}


def trace(root: Path, path: Path) -> dict:
    """The lineage of whatever `path` holds; {"matches": []} when nothing recorded has its content."""
    root, digests = Path(root), digests_of(path)
    wanted = set(digests.values())
    in_lock = _lock_matches(root, wanted)
    records, matches = [], []
    for record in all_records(root):
        hits = [{"artifact": a, "stage": s} for d, a, s in record_digests(record) if d in wanted]
        if hits:
            records.append(record)
            matches += [h for h in hits if h not in matches]
    lineage = records[0] if records else None  # the run that first produced this content: its code, its run
    if lineage is None and in_lock:
        current = current_lineage(root)
        lineage = current if any(d in wanted for d, _, _ in record_digests(current)) else None
    for hit in in_lock:
        if hit not in matches:
            matches.append(hit)
    return {
        "path": str(path),
        "digests": digests,
        "matches": matches,
        "in_dvc_lock": bool(in_lock),
        "made_by": _run(records[0]) if records else None,
        "latest": {**_run(records[-1]), "metrics": records[-1].get("metrics")} if records else None,
        "runs": [_run(r) for r in records],
        "lineage": lineage,
    }


def flatten(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def params_diff(old: dict | None, new: dict) -> dict[str, list]:
    """{dotted key: [before, after]} for every param that differs (all of them vs. no previous run)."""
    if old is None:
        return {}
    before, after = flatten(old), flatten(new)
    return {k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def stages_changed(record: dict) -> list[str]:
    """Stages whose outputs differ from the previous run's, in pipeline order: what really changed
    (a plain `dvc repro` cannot tell evaluate which upstream stages it ran)."""
    arts, changed = record.get("artifacts", {}), set(record.get("changed_since_previous", []))
    return list(dict.fromkeys(a.get("stage") for p, a in arts.items() if p in changed))


def history(root: Path) -> list[dict]:
    rows, previous = [], None
    for record in all_records(Path(root)):
        params = record.get("params", {})
        rows.append(
            {
                **_run(record),
                "commit": (record.get("git") or {}).get("commit"),
                "dirty": (record.get("git") or {}).get("dirty"),
                "data_md5": record.get("data_md5", {}),
                "raw_arrays": record.get("raw_arrays", {}),
                "params_changed": params_diff(previous, params),
                "stages_changed": stages_changed(record),
                "metrics": record.get("metrics", {}),
            }
        )
        previous = params
    return rows


def trained_from(root: Path, data: str) -> dict:
    """Forwards: every model recorded as trained from this data (a path, or a digest or its prefix)."""
    if Path(data).exists():
        wanted = set(digests_of(Path(data)).values())
        hit = lambda d: d in wanted  # noqa: E731
    else:
        query = data.strip().lower()
        if len(query.removesuffix(".dir")) < 6 or any(c not in "0123456789abcdef" for c in query.removesuffix(".dir")):
            raise ValueError(f"{data!r} is neither an existing path nor a digest (give at least 6 hex digits)")
        hit = lambda d: d.lower().startswith(query)  # noqa: E731
    models: dict[str, dict] = {}
    for record in all_records(Path(root)):
        found = [(d, a) for d, a, s in record_digests(record) if s in DATA_STAGES and hit(d)]
        if not found or not record.get("model_md5"):
            continue
        entry = models.setdefault(record["model_md5"], {"model_md5": record["model_md5"], "first": _run(record)})
        entry |= {"runs": entry.get("runs", 0) + 1, "last": _run(record), "matched": sorted({a for _, a in found})}
        entry |= {"metrics": record.get("metrics", {}), "train": record.get("params", {}).get("train", {})}
    return {"data": data, "models": list(models.values()), "model_path": MODEL}
