"""What DVC knows, read without importing DVC: the stages of dvc.yaml, the outs of dvc.lock, and
DVC's md5 of a file or a folder, recomputed from the bytes.

A file's md5 is the md5 of its bytes. A folder's is the md5 of the JSON list of its files
(`[{"md5": ..., "relpath": ...}]`, sorted by relpath, as dvc_data's Tree.as_bytes writes it)
plus ".dir". DVC itself trusts its state cache (inode, mtime, size); an audit must not, so
every byte is read again, on a few threads (hashlib releases the GIL on large chunks).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from tasks.io import file_digest

THREADS = min(4, os.cpu_count() or 1)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def manifest_md5(manifest: dict[str, str]) -> str:
    """The ".dir" md5 DVC gives a folder whose files (relpath -> md5) are `manifest`."""
    entries = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(manifest.items())]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def hash_paths(root: Path, rels: list[str]) -> dict[str, dict | None]:
    """{rel: {"md5", "size", and for folders "nfiles", "files"}} or None where rel is missing."""
    found = {rel: _files_of(root / rel) for rel in rels if (root / rel).exists()}
    every = [f for files in found.values() for f in files]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        digests = dict(zip(every, pool.map(file_digest, every), strict=True))
    out: dict[str, dict | None] = dict.fromkeys(rels)
    for rel, files in found.items():
        size = sum(f.stat().st_size for f in files)
        if (root / rel).is_dir():
            manifest = {f.relative_to(root / rel).as_posix(): digests[f] for f in files}
            out[rel] = {"md5": manifest_md5(manifest), "size": size, "nfiles": len(files), "files": manifest}
        else:
            out[rel] = {"md5": digests[files[0]], "size": size}
    return out


def hash_path(path: Path) -> dict | None:
    path = Path(path)
    return hash_paths(path.parent, [path.name])[path.name]


def cached_manifest(root: Path, dir_md5: str) -> dict[str, str] | None:
    """The file list DVC keeps in its cache for a folder hash (default cache location), if there."""
    if not dir_md5.endswith(".dir"):
        return None
    value = dir_md5.removesuffix(".dir")
    for base in (root / ".dvc/cache/files/md5", root / ".dvc/cache"):
        entry = base / value[:2] / f"{value[2:]}.dir"
        if entry.is_file():
            try:
                return {e["relpath"]: e["md5"] for e in json.loads(entry.read_text())}
            except (ValueError, KeyError, TypeError):
                return None
    return None


def load_yaml(path: Path) -> dict:
    try:
        return yaml.load(path.read_text(), Loader=_LOADER) or {}
    except FileNotFoundError:
        return {}


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]


def pipeline(root: Path) -> dict[str, dict[str, list[str]]]:
    """{stage: {"deps": [...], "outs": [...]}} from dvc.yaml (outs, metrics and plots alike)."""
    stages = load_yaml(root / "dvc.yaml").get("stages", {})
    return {
        name: {
            "deps": _paths(s.get("deps")),
            "outs": _paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots")),
        }
        for name, s in stages.items()
    }


def lock_outs(lock: dict) -> dict[str, dict]:
    """{path: {"stage", "md5", ...}} for every out recorded in a parsed dvc.lock."""
    return {
        o["path"]: {"stage": stage, **{k: v for k, v in o.items() if k != "path"}}
        for stage, entry in lock.get("stages", {}).items()
        for o in entry.get("outs", [])
    }


def is_inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def code_paths(stages: dict[str, dict[str, list[str]]]) -> list[str]:
    """Deps that no stage produces: the code (and any other hand-made input) of the pipeline."""
    outs = [o for s in stages.values() for o in s["outs"]]
    deps = {d for s in stages.values() for d in s["deps"]}
    return sorted(d for d in deps if not any(is_inside(d, o) for o in outs))
