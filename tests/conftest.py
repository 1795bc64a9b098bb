"""Fixtures: tiny synthetic MNIST (50 train / 20 test, all ten classes) as arrays, IDX mirrors and npz
files, params pinned to its digests, and a local HTTP server that can misbehave on demand."""

from __future__ import annotations

import copy
import gzip
import hashlib
import http.server
import io
import os
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tasks.config import ARRAY_NAMES, Params, parse_params
from tasks.digests import IDX_FILES
from tasks.io import sha256_array

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 50, 20


# ---------------------------------------------------------------- synthetic data


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faint noise plus one bright 6x6 block whose place encodes the class: learnable in a few steps."""
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 + 12 * (label // 5), 1 + 5 * (label % 5)
        images[i, row : row + 6, col : col + 6] = rng.integers(200, 256, size=(6, 6), dtype=np.uint8)
    return images


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_train = rng.permutation(np.arange(N_TRAIN) % 10).astype(np.uint8)
    y_test = rng.permutation(np.arange(N_TEST) % 10).astype(np.uint8)
    return {
        "x_train": make_images(y_train, rng),
        "y_train": y_train,
        "x_test": make_images(y_test, rng),
        "y_test": y_test,
    }


def idx_bytes(array: np.ndarray) -> bytes:
    """The original IDX layout: 0x0000, type 0x08 (uint8), ndim, big-endian dims, then the bytes."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def digests_of(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {name: sha256_array(arrays[name]) for name in ARRAY_NAMES}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_mirror(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ARRAY_NAMES:
        data = idx_bytes(arrays[name])
        stem = IDX_FILES[name]
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    return folder


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def raw_params(arrays: dict[str, np.ndarray], **sections: dict) -> dict:
    """params.yaml content for the synthetic data: its digests and sizes, fast training."""
    base = {
        "ingest": {"digests": digests_of(arrays), "timeout_s": 5.0, "retries": 2},
        "validate": {"train_size": len(arrays["y_train"]), "test_size": len(arrays["y_test"])},
        "train": {"epochs": 1, "batch_size": 10, "steps_per_execution": 1},
        "evaluate": {"batch_size": 10},
    }
    return deep_merge(base, sections)


@pytest.fixture(scope="session")
def arrays() -> dict[str, np.ndarray]:
    return make_arrays()


@pytest.fixture
def make_params(arrays) -> Callable[..., Params]:
    """make_params(ingest={...}, train={...}) -> Params for the synthetic data, sections merged in."""

    def build(**sections: dict) -> Params:
        return parse_params(raw_params(arrays, **sections))

    return build


@pytest.fixture
def params(make_params) -> Params:
    return make_params()


@pytest.fixture
def mirror_gz(tmp_path, arrays) -> Path:
    return write_mirror(tmp_path / "mirror_gz", arrays, gz=True)


@pytest.fixture
def mirror_plain(tmp_path, arrays) -> Path:
    return write_mirror(tmp_path / "mirror_plain", arrays, gz=False)


@pytest.fixture
def npz_file(tmp_path, arrays) -> Path:
    path = tmp_path / "mnist.npz"
    path.write_bytes(npz_bytes(arrays))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty working folder the stages write data/, models/ and reports/ into."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.delenv("MNIST_MIRROR", raising=False)
    return root


@pytest.fixture(scope="session")
def processed(arrays) -> dict[str, np.ndarray]:
    from tasks.preprocess import preprocess_arrays

    return preprocess_arrays(arrays)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory, processed) -> Path:
    """The seed's mlp, trained one epoch on the synthetic data and saved with save_model."""
    from tasks.config import TrainParams
    from tasks.modelio import save_model
    from tasks.train import train_model

    model, _ = train_model(processed["x_train"], processed["y_train"], TrainParams(epochs=1, batch_size=10), verbose=0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    save_model(model, path)
    return path


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record fetch's backoff delays instead of sleeping them."""
    import tasks.sources

    delays: list[float] = []
    fake = types.SimpleNamespace(sleep=delays.append, monotonic=time.monotonic)
    monkeypatch.setattr(tasks.sources, "time", fake)
    return delays


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too) with its bytes, to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- a local HTTP server


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    declared_length: int | None = None  # a Content-Length larger than the body simulates a dropped connection


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        replies = self.server.routes.get(self.path)
        if not replies:
            self.send_error(404, "Not Found")
            return
        reply = replies[min(self.server.hits[self.path], len(replies)) - 1]
        if reply.status != 200:
            self.send_error(reply.status)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        length = len(reply.body) if reply.declared_length is None else reply.declared_length
        self.send_header("Content-Length", str(length))
        if length != len(reply.body):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, list[Reply]] = {}
        self.hits: Counter[str] = Counter()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def serve(self, path: str, *replies: Reply | bytes) -> str:
        """Answer successive GETs of path with these replies (the last one repeats); return its URL."""
        self.routes[path] = [r if isinstance(r, Reply) else Reply(body=r) for r in replies]
        return self.url(path)


@pytest.fixture
def http_server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
