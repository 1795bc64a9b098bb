"""Saving and loading Keras models so that the same weights always give the same bytes.

A plain `model.save("x.keras")` stamps a save date into metadata.json, the current time onto
every zip entry, and Python object addresses (`shared_object_id`) into config.json, so DVC
would see a new model on every run. `save_model` rewrites the archive with the date and times
removed and the ids renumbered in document order; `load_model` reads it back in safe mode only.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from tasks.errors import StageError
from tasks.io import write_bytes

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
VOLATILE_METADATA = ("date_saved",)


def renumber_shared_objects(node, ids: dict[int, int] | None = None):
    """Replace memory-address ids by 1, 2, 3... in order of appearance; sharing is preserved."""
    ids = {} if ids is None else ids
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "shared_object_id" and isinstance(value, int):
                out[key] = ids.setdefault(value, len(ids) + 1)
            else:
                out[key] = renumber_shared_objects(value, ids)
        return out
    if isinstance(node, list):
        return [renumber_shared_objects(item, ids) for item in node]
    return node


def normalize_keras_archive(data: bytes) -> bytes:
    """Same entries and payloads, in the same order, minus every timestamp."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            payload = src.read(info)
            if info.filename == "metadata.json":
                meta = {k: v for k, v in json.loads(payload).items() if k not in VOLATILE_METADATA}
                payload = json.dumps(meta, sort_keys=True).encode()
            elif info.filename == "config.json":
                payload = json.dumps(renumber_shared_objects(json.loads(payload))).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
            entry.compress_type = info.compress_type
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, payload)
    return out.getvalue()


def foreign_objects(node, found: list[str] | None = None) -> list[str]:
    """Everything in a model's config.json that is code rather than Keras's own classes:
    Lambda layers, serialized Python functions, and classes from any module outside keras.

    Safe mode alone refuses lambdas, but it loads any custom class registered in the loading
    process; our models are made of Keras layers only, so anything else is refused by name.
    """
    found = [] if found is None else found
    if isinstance(node, dict):
        name, module, registered = node.get("class_name"), node.get("module"), node.get("registered_name")
        config = node.get("config")
        label = f"{name} '{config['name']}'" if isinstance(config, dict) and "name" in config else str(name)
        if name in ("Lambda", "__lambda__", "function"):
            found.append(f"{label} (Python code)")
        elif isinstance(name, str) and not name.startswith("__"):
            if not (isinstance(module, str) and (module == "keras" or module.startswith("keras."))):
                found.append(f"{label} from module {module!r}")
            elif registered not in (None, name):  # custom objects register as "package>Name"
                found.append(f"{label} registered as {registered!r}")
        for value in node.values():
            foreign_objects(value, found)
    elif isinstance(node, list):
        for item in node:
            foreign_objects(item, found)
    return found


def _config_of(path: Path) -> dict | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (KeyError, ValueError, zipfile.BadZipFile):
        return None  # Keras names what is missing or broken


def save_model(model, path: Path | str) -> None:
    """Write a .keras file atomically and byte-reproducibly."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.keras"
        model.save(staged)
        data = normalize_keras_archive(staged.read_bytes())
    write_bytes(path, data)


def load_model(path: Path | str, input_shape: tuple[int, ...] | None = None):
    """Load in safe mode (no lambdas, no arbitrary code); check the input shape if given."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path} is missing: run the train stage first (dvc repro train)")
    if not zipfile.is_zipfile(path):
        raise StageError(f"{path} is not a Keras model (.keras files are zip archives); retrain it")
    if foreign := foreign_objects(_config_of(path)):
        raise StageError(
            f"{path}: refused to load in safe mode: it holds code, not only Keras layers: {', '.join(foreign[:5])}"
        )
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=True)
    except Exception as exc:  # whatever Keras trips over in a broken archive, the file is refused
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise StageError(f"{path}: refused to load in safe mode: {first}") from None
    if not isinstance(model, keras.Model):
        raise StageError(f"{path} holds a {type(model).__name__}, not a Keras model; retrain it (dvc repro train)")
    if input_shape is not None and tuple(model.input_shape[1:]) != tuple(input_shape):
        raise StageError(
            f"{path} expects inputs of shape {tuple(model.input_shape[1:])}, but the processed data "
            f"has {tuple(input_shape)}: retrain the model on this data (dvc repro train)"
        )
    return model
