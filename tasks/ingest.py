"""ingest: fetch MNIST from the configured source and pin it to the published digests.

Whatever the container (Keras's npz, a mirror of the IDX files, a local npz), the decoded
arrays must hash to the pinned SHA-256s; otherwise nothing is written.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from tasks.config import ARRAY_NAMES, IngestParams, Params, mirror_override
from tasks.digests import IDX_FILES
from tasks.io import atomic_path, save_arrays, sha256_array, write_json
from tasks.sources import decode_idx, decode_npz, read_location, read_mirror_file, redact
from tasks.stage import StageError, run_stage

RAW_DIR = Path("data/raw")
PROVENANCE = Path("reports/ingest.json")


def resolve_source(params: IngestParams, mirror_env: str | None) -> tuple[str, str]:
    """(kind, location) to read from; MNIST_MIRROR beats params.yaml."""
    if mirror_env:
        return "mirror", mirror_env
    location = {"keras": params.url, "mirror": params.mirror, "npz": params.npz_path}[params.source]
    if not location:
        field = {"mirror": "mirror", "npz": "npz_path"}[params.source]
        raise StageError(f"ingest.source is {params.source!r} but ingest.{field} is empty in params.yaml")
    return params.source, location


def read_source(kind: str, location: str, params: IngestParams) -> tuple[dict[str, np.ndarray], dict]:
    """Decode the four arrays and describe where each byte came from."""
    fetch = {"timeout": params.timeout_s, "retries": params.retries}
    if kind == "mirror":
        arrays, files = {}, {}
        for name in ARRAY_NAMES:
            ndim = 3 if name.startswith("x") else 1
            stem = IDX_FILES[name]
            where, data = read_mirror_file(location, stem, check=lambda b, s=stem, n=ndim: decode_idx(b, s, n), **fetch)
            arrays[name] = decode_idx(data, redact(where), expect_ndim=ndim)
            files[redact(where)] = hashlib.sha256(data).hexdigest()
        return arrays, {"files": files}
    pinned = params.url_sha256 if kind == "keras" else None
    data = read_location(location, sha256=pinned, **fetch)
    return decode_npz(data, redact(location)), {"files": {redact(location): hashlib.sha256(data).hexdigest()}}


def check_digests(arrays: dict[str, np.ndarray], pinned: dict[str, str], source: str) -> dict[str, str]:
    """SHA-256 of every array, compared with the pinned ones; any mismatch is named, with the source."""
    digests = {name: sha256_array(arrays[name]) for name in ARRAY_NAMES}
    wrong = [name for name in ARRAY_NAMES if digests[name] != pinned[name]]
    if wrong:
        detail = "; ".join(f"{n}: got {digests[n][:16]}…, pinned {pinned[n][:16]}…" for n in wrong)
        raise StageError(
            f"digest mismatch for {', '.join(wrong)} from {source} ({detail}). The source does not hold "
            "the pinned MNIST; fix the source, or update ingest.digests in params.yaml if intended"
        )
    return digests


def ingest(params: Params, mirror_env: str | None = None) -> dict:
    kind, location = resolve_source(params.ingest, mirror_env)
    shown = redact(location)  # credentials in a URL never reach the log or the record
    print(f"[ingest] source: {kind} {shown}", flush=True)
    arrays, origin = read_source(kind, location, params.ingest)
    digests = check_digests(arrays, params.ingest.digests, shown)
    record = {
        "source": {"kind": kind, "location": shown, **origin},
        "arrays": {
            n: {"shape": list(arrays[n].shape), "dtype": str(arrays[n].dtype), "sha256": digests[n]}
            for n in ARRAY_NAMES
        },
    }
    with atomic_path(PROVENANCE) as staged:  # staged first, renamed last: both outputs change, or neither
        write_json(staged, record)
        save_arrays(RAW_DIR, {n: arrays[n].astype(np.uint8, copy=False) for n in ARRAY_NAMES})
    for n in ARRAY_NAMES:
        print(f"[ingest] {n}: {arrays[n].shape} sha256 {digests[n][:16]}… ok", flush=True)
    return record


def main() -> int:
    return run_stage("ingest", lambda params: ingest(params, mirror_override()))


if __name__ == "__main__":
    sys.exit(main())
