"""Guarding the workspace a flow run writes to: one run at a time, and recorded overrides."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tasks.config import load_params, parse_params
from tasks.io import write_text

LOCK_FILE = Path(".dvc/tmp/mnist-pipeline.lock")


class WorkspaceBusy(RuntimeError):
    """Another pipeline run holds the workspace."""


@contextlib.contextmanager
def workspace_lock(root: Path, wait: bool = True) -> Iterator[None]:
    """An exclusive OS lock on the workspace for the length of a run.

    The kernel drops it when the holder exits, however it dies (even SIGKILL), so a killed
    run can never leave a lock behind that blocks the next one.
    """
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkspaceBusy(f"{root} is busy: a pipeline run ({holder}) holds {path}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`train.epochs=10` style overrides; values are parsed as YAML scalars (10 -> int)."""
    yaml = YAML(typ="safe")
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. train.epochs=10")
        overrides[key.strip()] = yaml.load(value) if value.strip() else ""
    return overrides


def overridden_params(root: Path, overrides: Mapping[str, Any]) -> tuple[YAML, Any]:
    """params.yaml with the overrides applied in memory (comments kept), checked like any params.yaml.

    Raises ParamsError or ValueError naming the key: nothing has been written yet.
    """
    yaml = YAML()
    yaml.preserve_quotes = True
    path = root / "params.yaml"
    load_params(path)  # the file as it stands must be readable and valid first
    document = yaml.load(path.read_text())
    for key, value in overrides.items():
        node = document
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node:
                raise ValueError(f"override {key}: params.yaml has no section {part!r}")
            node = node[part]
        node[leaf] = value
    parse_params(document, f"params.yaml with overrides {dict(overrides)}")
    return yaml, document


def apply_overrides(root: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Write overrides into params.yaml after checking the result is valid.

    Going through params.yaml is what makes an override reach DVC's record: dvc.lock will
    hold the new value, and `dvc status` sees the change like any hand edit.
    """
    if not overrides:
        return {}
    yaml, document = overridden_params(root, overrides)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    write_text(root / "params.yaml", buffer.getvalue())
    return dict(overrides)
