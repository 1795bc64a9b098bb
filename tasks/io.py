"""Shared I/O: atomic writes, safe array files, content digests.

Every output is written to a temporary name beside its target and renamed into place, so a
killed or failing stage leaves the previous version intact and never a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _name_target(exc: OSError, target: Path) -> None:
    """A failed write names the output it was for, not a temporary name (a full disk names nothing)."""
    if exc.filename is None or ".tmp" in str(exc.filename):
        exc.filename = str(target)


@contextlib.contextmanager
def atomic_path(target: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside target; rename it onto target only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        _name_target(exc, target)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary folder; swap it in for target only if the block succeeds.

    The swap is two renames (target aside, tmp in). If the second fails, target is put back;
    if a kill fell between them, the next call puts the set-aside version back first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        os.replace(old, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old.exists() and not target.exists():
                os.replace(old, target)
            raise
    except OSError as exc:
        _name_target(exc, target)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_bytes(target: Path | str, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path | str, text: str) -> None:
    write_bytes(target, text.encode())


def write_json(target: Path | str, payload: Mapping | list) -> None:
    write_text(target, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def save_array(path: Path, array: np.ndarray) -> None:
    """Write one .npy (no pickle); callers put it inside an atomic_dir."""
    if array.dtype == object:
        raise TypeError(f"refusing to save {path.name}: object arrays need pickle")
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)


def load_array(path: Path | str, mmap: bool = True) -> np.ndarray:
    """Memory-map a .npy file; object arrays (which would need pickle) are refused."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that produces it (dvc repro)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: refused to load ({exc}); arrays must be plain numeric .npy") from None


def save_arrays(folder: Path | str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a folder of .npy arrays all at once: either every file is replaced or none is."""
    with atomic_dir(folder) as tmp:
        for name, array in arrays.items():
            save_array(tmp / f"{name}.npy", array)


def load_arrays(folder: Path | str, names: tuple[str, ...], mmap: bool = True) -> dict[str, np.ndarray]:
    return {name: load_array(Path(folder) / f"{name}.npy", mmap=mmap) for name in names}


def sha256_array(array: np.ndarray) -> str:
    """Digest of the C-ordered raw bytes, independent of container or file format."""
    digest = hashlib.sha256()
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, CHUNK * 16):
        digest.update(flat[start : start + CHUNK * 16])
    return digest.hexdigest()


def file_digest(path: Path | str, algorithm: str = "md5") -> str:
    """md5 (what DVC records for a file) or sha256 of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
