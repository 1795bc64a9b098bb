"""Faults and bad input (issue 7): each kind gives a clear error, retries where they help, and
leaves the previous outputs byte-identical with no temporary file behind.

Faults already covered elsewhere are not repeated here; docs/faults.md maps every fault to
its test. The slow, process-killing faults are in test_faults_interrupt.py.
"""

from __future__ import annotations

import base64
import errno
import gzip
import http.server
import io
import json
import os
import pickle
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks import ingest as ingest_module
from tasks.config import ARRAY_NAMES, ParamsError, load_params, parse_params
from tasks.digests import IDX_FILES
from tasks.ingest import ingest
from tasks.io import load_array, save_arrays
from tasks.sources import SourceError, decode_npz, redact
from tasks.stage import EXIT_TEMPFAIL, StageError
from tests.conftest import REPO, Reply, digests_of, idx_bytes, make_arrays, npz_bytes, raw_params, sha256, snapshot

OUTPUT_DIRS = ("data", "reports", "models")
STAGES = ("ingest", "validate", "preprocess", "train", "evaluate")


def outputs(root: Path) -> dict[str, bytes]:
    """Every output file (hidden temporary ones too), with its bytes."""
    return {path: data for path, data in snapshot(root).items() if path.split("/")[0] in OUTPUT_DIRS}


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name or p.name.endswith(".old"))


def write_params(arrays: dict[str, np.ndarray], **sections: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays, **sections)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def other_arrays() -> dict[str, np.ndarray]:
    """A second synthetic MNIST: a run that wrongly replaced the first would change the bytes."""
    return make_arrays(seed=1)


@pytest.fixture
def other_npz(tmp_path, other_arrays) -> Path:
    path = tmp_path / "other.npz"
    path.write_bytes(npz_bytes(other_arrays))
    return path


@pytest.fixture
def previous(project, make_params, npz_file) -> dict[str, bytes]:
    """A workspace holding a good ingest; its outputs must come through every fault unchanged."""
    ingest(make_params(ingest={"source": "npz", "npz_path": str(npz_file)}))
    return outputs(project)


def assert_untouched(root: Path, before: dict[str, bytes]) -> None:
    assert outputs(root) == before
    assert leftovers(root) == []


# ---------------------------------------------------------------- misbehaving servers below HTTP


class RawServer:
    """A TCP server that stalls, cuts a chunked body, hangs up, resets, or does not speak HTTP."""

    def __init__(self, mode: str) -> None:
        self.mode, self.hits, self.stop = mode, 0, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path: str = "/mnist.npz") -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.hits += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            conn.recv(65536)
            if self.mode == "silent":
                self.stop.wait(10)
            elif self.mode == "stall_body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
                self.stop.wait(10)
            elif self.mode == "chunked_cut":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100 + b"\r\n")
            elif self.mode == "garbage":
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            elif self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def raw_server() -> Iterator:
    servers: list[RawServer] = []

    def start(mode: str) -> RawServer:
        servers.append(RawServer(mode))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class AuthServer(http.server.ThreadingHTTPServer):
    """Serves files only to requests carrying Basic auth reader:s3cret."""

    daemon_threads = True
    expected = "Basic " + base64.b64encode(b"reader:s3cret").decode()

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _AuthHandler)
        self.files, self.seen = files, []

    def url(self, path: str, userinfo: str = "reader:s3cret@") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server_address[1]}{path}"


class _AuthHandler(http.server.BaseHTTPRequestHandler):
    server: AuthServer

    def do_GET(self) -> None:
        self.server.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != self.server.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mnist"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.server.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def auth_server(arrays) -> Iterator[AuthServer]:
    files = {"/mnist.npz": npz_bytes(arrays)}
    files |= {f"/mnist/{IDX_FILES[n]}.gz": gzip.compress(idx_bytes(arrays[n])) for n in ARRAY_NAMES}
    server = AuthServer(files)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- ingest: server down, slow, misbehaving


@pytest.mark.parametrize("source", ["keras", "mirror"])
@pytest.mark.parametrize("down", ["connection refused", "host does not resolve"])
def test_server_down_is_retried_then_fails_clearly(project, previous, make_params, sleeps, source, down):
    base = f"http://127.0.0.1:{free_port()}" if down == "connection refused" else "http://mnist.invalid"
    settings = {"url": f"{base}/mnist.npz"} if source == "keras" else {"source": "mirror", "mirror": f"{base}/mnist"}
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={**settings, "retries": 2}))
    message = str(err.value)
    assert re.search(r": failed after 3 attempt\(s\), last error: \[Errno -?\d+\] ", message), message
    assert "Connection refused" in message if down == "connection refused" else True
    assert "Set MNIST_MIRROR to a local folder" in message
    assert err.value.transient
    assert sleeps == [1.0, 2.0]
    assert_untouched(project, previous)


@pytest.mark.parametrize("mode", ["silent", "stall_body"], ids=["no-answer", "stalls-mid-body"])
def test_slow_server_times_out_then_fails_clearly(project, previous, make_params, raw_server, sleeps, mode):
    server = raw_server(mode)
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={"url": server.url(), "timeout_s": 0.2, "retries": 1}))
    assert (
        f"{server.url()}: failed after 2 attempt(s), last error: timed out: no data for 0.2s (ingest.timeout_s)"
        in str(err.value)
    )
    assert err.value.transient
    assert server.hits == 2
    assert time.monotonic() - started < 5
    assert_untouched(project, previous)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("chunked_cut", "connection closed mid-transfer (IncompleteRead(100 bytes read))"),
        ("garbage", "not an HTTP answer (BadStatusLine: SSH-2.0-OpenSSH_9.6). Offline?"),
        ("close", "Remote end closed connection without response"),
        ("reset", "Connection reset by peer"),
    ],
)
def test_server_that_breaks_the_protocol_is_retried_then_fails_clearly(
    project, previous, make_params, raw_server, sleeps, mode, reason
):
    server = raw_server(mode)
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={"url": server.url(), "retries": 2}))
    assert f"{server.url()}: failed after 3 attempt(s), last error: " in str(err.value)
    assert reason in str(err.value)
    assert err.value.transient
    assert server.hits == 3
    assert_untouched(project, previous)


@pytest.mark.parametrize("status", [401, 403, 404, 410, 451])
def test_client_error_is_not_retried_and_points_to_mnist_mirror(
    project, previous, make_params, http_server, sleeps, status
):
    url = http_server.serve("/mnist.npz", Reply(status=status))
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={"url": url, "retries": 3}))
    message = str(err.value)
    assert message.startswith(f"{url}: server answered HTTP {status} ")
    assert "this will not fix itself. Point MNIST_MIRROR at a folder or URL holding the four IDX files" in message
    assert not err.value.transient
    assert (http_server.hits["/mnist.npz"], sleeps) == (1, [])
    assert_untouched(project, previous)


@pytest.mark.parametrize("status", [401, 403, 410])
def test_mirror_url_refusing_a_file_is_not_retried(project, previous, make_params, http_server, arrays, sleeps, status):
    for name in ARRAY_NAMES:
        http_server.serve(f"/mnist/{IDX_FILES[name]}.gz", gzip.compress(idx_bytes(arrays[name])))
    http_server.serve(f"/mnist/{IDX_FILES['x_test']}.gz", Reply(status=status))
    with pytest.raises(SourceError, match=f"t10k-images-idx3-ubyte.gz: server answered HTTP {status}") as err:
        ingest(make_params(ingest={"source": "mirror", "mirror": http_server.url("/mnist")}))
    assert not err.value.transient
    assert http_server.hits[f"/mnist/{IDX_FILES['x_test']}.gz"] == 1
    assert_untouched(project, previous)


# ---------------------------------------------------------------- ingest: truncated or corrupted download


def _damaged(body: bytes) -> dict[str, Reply]:
    return {
        "connection-cut": Reply(body=body[:1000], declared_length=len(body)),
        "short-body": Reply(body=body[:-100]),  # an honest Content-Length, but not all of the file
        "bit-flip": Reply(body=body[:500] + bytes([body[500] ^ 1]) + body[501:]),
    }


@pytest.mark.parametrize("damage", ["connection-cut", "short-body", "bit-flip"])
def test_damaged_npz_download_is_retried_then_fails_clearly(
    project, previous, make_params, http_server, arrays, sleeps, damage
):
    body = npz_bytes(arrays)
    url = http_server.serve("/mnist.npz", _damaged(body)[damage])
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={"url": url, "url_sha256": sha256(body), "retries": 2}))
    expected = "connection closed after 1000 of" if damage == "connection-cut" else "corrupted download: SHA-256"
    assert f"{url}: failed after 3 attempt(s), last error: {expected}" in str(err.value)
    assert http_server.hits["/mnist.npz"] == 3
    assert_untouched(project, previous)


@pytest.mark.parametrize("damage", ["connection-cut", "short-body", "bit-flip"])
def test_damaged_npz_download_then_a_good_one_succeeds(project, make_params, http_server, arrays, sleeps, damage):
    body = npz_bytes(arrays)
    url = http_server.serve("/mnist.npz", _damaged(body)[damage], body)
    ingest(make_params(ingest={"url": url, "url_sha256": sha256(body)}))
    assert http_server.hits["/mnist.npz"] == 2
    assert leftovers(project) == []


@pytest.mark.parametrize("damage", ["connection-cut", "short-body", "bit-flip"])
def test_damaged_mirror_download_is_retried_then_fails_clearly(
    project, previous, make_params, http_server, arrays, sleeps, damage
):
    """Mirror files have no pinned file digest: a body that does not decode counts as a bad transfer."""
    for name in ARRAY_NAMES:
        http_server.serve(f"/mnist/{IDX_FILES[name]}.gz", gzip.compress(idx_bytes(arrays[name])))
    stem = IDX_FILES["x_train"]
    http_server.serve(f"/mnist/{stem}.gz", _damaged(gzip.compress(idx_bytes(arrays["x_train"])))[damage])
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={"source": "mirror", "mirror": http_server.url("/mnist"), "retries": 2}))
    message = str(err.value)
    assert message.startswith(f"{http_server.url(f'/mnist/{stem}.gz')}: failed after 3 attempt(s), last error: ")
    assert ("connection closed after" if damage == "connection-cut" else f"corrupted download: {stem}: ") in message
    assert err.value.transient
    assert http_server.hits[f"/mnist/{stem}.gz"] == 3
    assert_untouched(project, previous)


def test_damaged_mirror_download_then_a_good_one_succeeds(project, make_params, http_server, arrays, sleeps):
    for name in ARRAY_NAMES:
        http_server.serve(f"/mnist/{IDX_FILES[name]}.gz", gzip.compress(idx_bytes(arrays[name])))
    stem, good = IDX_FILES["x_train"], gzip.compress(idx_bytes(arrays["x_train"]))
    http_server.serve(f"/mnist/{stem}.gz", good[:-20], good)
    ingest(make_params(ingest={"source": "mirror", "mirror": http_server.url("/mnist")}))
    assert http_server.hits[f"/mnist/{stem}.gz"] == 2
    np.testing.assert_array_equal(load_array("data/raw/x_train.npy"), arrays["x_train"])


# ---------------------------------------------------------------- ingest: mirror missing a file


@pytest.mark.parametrize("kind", ["folder", "url"])
def test_mirror_missing_a_file_names_it_and_every_place_looked(
    project, previous, make_params, http_server, mirror_gz, arrays, sleeps, kind
):
    stem = IDX_FILES["y_test"]
    if kind == "folder":
        (mirror_gz / f"{stem}.gz").unlink()
        base = str(mirror_gz)
    else:
        for name in ("x_train", "y_train", "x_test"):
            http_server.serve(f"/mnist/{IDX_FILES[name]}.gz", gzip.compress(idx_bytes(arrays[name])))
        base = http_server.url("/mnist")
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={"source": "mirror", "mirror": base}))
    assert str(err.value) == (
        f"mirror {base} is missing {stem}: looked for {base}/{stem}.gz, {base}/{stem}. A mirror holds the four "
        "original IDX files of MNIST (gzipped or not): put the missing one there, or point MNIST_MIRROR elsewhere"
    )
    assert not err.value.transient
    assert sleeps == []
    assert_untouched(project, previous)


# ---------------------------------------------------------------- ingest: disk full while writing


def _disk_full(monkeypatch, where: str, code: int = errno.ENOSPC) -> None:
    """Make one write of ingest fail as a full disk would: after writing part of the file."""
    full = OSError(code, os.strerror(code))
    if where in ("first array", "last array"):
        real, calls = np.save, []

        def save(path, *args, **kwargs):
            calls.append(path)
            if len(calls) == (1 if where == "first array" else len(ARRAY_NAMES)):
                Path(path).write_bytes(b"\x93NUMPY half")
                raise full
            return real(path, *args, **kwargs)

        monkeypatch.setattr(np, "save", save)
    elif where == "provenance json":
        real_write = Path.write_bytes

        def write_bytes(self, data):
            if ".ingest.json." in self.name:  # the staged record, or the temporary file it is written through
                real_write(self, data[: len(data) // 2])
                raise full
            return real_write(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    elif where == "folder swap":
        real_replace = os.replace

        def replace(src, dst):
            if Path(dst).name == "raw" and Path(src).name.endswith(".tmp"):  # the new folder moving in
                raise full
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("first array", errno.ENOSPC),
        ("last array", errno.ENOSPC),
        ("provenance json", errno.ENOSPC),
        ("folder swap", errno.ENOSPC),
        ("last array", errno.EDQUOT),
    ],
    ids=["first-array", "last-array", "provenance-json", "folder-swap", "quota-exceeded"],
)
def test_disk_full_while_writing_keeps_previous_outputs(
    project, previous, arrays, other_arrays, other_npz, monkeypatch, capsys, where, code
):
    write_params(arrays, ingest={"source": "npz", "npz_path": str(other_npz), "digests": digests_of(other_arrays)})
    with pytest.MonkeyPatch.context() as full:
        _disk_full(full, where, code)
        assert ingest_module.main() == 1
    err = capsys.readouterr().err
    target = "reports/ingest.json" if where == "provenance json" else "data/raw"
    assert f"[ingest] FAILED: disk full while writing {target} ({os.strerror(code)}): free some space and rerun" in err
    assert "the previous outputs were kept" in err
    assert_untouched(project, previous)
    assert ingest_module.main() == 0  # the disk has room again: the same run now goes through
    np.testing.assert_array_equal(load_array(project / "data/raw/x_test.npy"), other_arrays["x_test"])
    assert leftovers(project) == []


def test_disk_full_on_the_first_run_leaves_nothing(project, arrays, npz_file, monkeypatch, capsys):
    write_params(arrays, ingest={"source": "npz", "npz_path": str(npz_file)})
    _disk_full(monkeypatch, "last array")
    assert ingest_module.main() == 1
    assert outputs(project) == {}
    assert leftovers(project) == []


def test_disk_full_names_the_file_when_the_os_does(capsys):
    from tasks.stage import describe

    message = describe(OSError(errno.ENOSPC, "No space left on device", "models/model.keras"))
    assert message.startswith("disk full while writing models/model.keras (No space left on device): free some space")


def test_folder_left_aside_by_a_kill_mid_swap_is_put_back(tmp_path, monkeypatch):
    """A kill between atomic_dir's two renames leaves `.raw.old` and no `raw`; the next write
    restores it first, so even if that write fails the previous version is there."""
    folder = tmp_path / "data" / "raw"
    save_arrays(folder, {"a": np.arange(3)})
    os.replace(folder, folder.with_name(".raw.old"))  # where the kill left things

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(OSError, match="No space left"):
        save_arrays(folder, {"a": np.arange(5)})
    assert load_array(folder / "a.npy").tolist() == [0, 1, 2]
    assert leftovers(tmp_path) == []


SLOW_WRITER = """
import sys, time
from pathlib import Path
from tasks.io import atomic_path
from tasks.stage import run_stage

def body(params):
    with atomic_path(Path("out.txt")) as tmp:
        tmp.write_text("half of it")
        print("writing", flush=True)
        time.sleep(60)

sys.exit(run_stage("demo", body))
"""


def test_sigterm_during_a_write_removes_the_temporary_file(project):
    Path("params.yaml").write_text("")
    Path("out.txt").write_text("previous\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "writing"
    assert len(leftovers(project)) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert Path("out.txt").read_text() == "previous\n"
    assert leftovers(project) == []


@pytest.fixture
def trained_workspace(project, arrays, processed, model_file) -> dict[str, bytes]:
    """A workspace with processed data, a model and its training curve, as train leaves it."""
    save_arrays(Path("data/processed"), processed)
    Path("models").mkdir()
    Path("models/model.keras").write_bytes(model_file.read_bytes())
    Path("reports").mkdir()
    Path("reports/training.csv").write_text("epoch,loss,accuracy\n1,2.3,0.1\n")
    write_params(arrays)
    return outputs(project)


@pytest.mark.parametrize("target", ["model.keras", "training.csv"])
def test_disk_full_while_train_writes_keeps_model_and_curve(trained_workspace, project, monkeypatch, capsys, target):
    import tasks.train as train_module
    from tasks.train import build_model, compile_model

    other = compile_model(build_model("mlp", hidden_units=8), 0.001)
    monkeypatch.setattr(
        train_module, "train_model", lambda x, y, p, verbose=2: (other, [{"epoch": 1, "loss": 1.0, "accuracy": 0.5}])
    )
    real_write = Path.write_bytes

    def write_bytes(self, data):
        if f".{target}." in self.name:  # the temporary file beside the target
            real_write(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert train_module.main() == 1
    written = {"model.keras": "models/model.keras", "training.csv": "reports/training.csv"}[target]
    assert f"[train] FAILED: disk full while writing {written} (No space left on device)" in capsys.readouterr().err
    assert_untouched(project, trained_workspace)


# ---------------------------------------------------------------- ingest: exit codes for Prefect's retries


def test_tempfail_code_is_the_one_the_flow_retries():
    from flows.stages import TEMPFAIL

    assert EXIT_TEMPFAIL == TEMPFAIL == 75


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        ("connection refused", 75, "failed after 2 attempt(s), last error: [Errno 111] Connection refused"),
        ("HTTP 503", 75, "failed after 2 attempt(s), last error: HTTP 503"),
        ("timeout", 75, "failed after 2 attempt(s), last error: timed out"),
        ("corrupted download", 75, "failed after 2 attempt(s), last error: corrupted download"),
        ("HTTP 404", 1, "server answered HTTP 404"),
        ("HTTP 403", 1, "server answered HTTP 403"),
        ("mirror missing a file", 1, "is missing t10k-labels-idx1-ubyte: looked for"),
        ("corrupt local file", 1, "not a readable .npz file"),
        ("digest mismatch", 1, "digest mismatch for x_train"),
    ],
)
def test_stage_exits_75_for_network_trouble_and_1_for_the_rest(
    project, arrays, http_server, raw_server, mirror_gz, tmp_path, sleeps, capsys, fault, code, message
):
    body = npz_bytes(arrays)
    ingest_settings = {
        "connection refused": {"url": f"http://127.0.0.1:{free_port()}/mnist.npz"},
        "HTTP 503": {"url": http_server.serve("/a.npz", Reply(status=503))},
        "timeout": {"url": raw_server("silent").url(), "timeout_s": 0.2},
        "corrupted download": {"url": http_server.serve("/b.npz", body[:-1] + b"!"), "url_sha256": sha256(body)},
        "HTTP 404": {"url": http_server.url("/gone.npz")},
        "HTTP 403": {"url": http_server.serve("/c.npz", Reply(status=403))},
        "mirror missing a file": {"source": "mirror", "mirror": str(mirror_gz)},
        "corrupt local file": {"source": "npz", "npz_path": str(tmp_path / "bad.npz")},
        "digest mismatch": {"source": "npz", "npz_path": str(tmp_path / "other.npz")},
    }[fault]
    (mirror_gz / f"{IDX_FILES['y_test']}.gz").unlink()
    (tmp_path / "bad.npz").write_bytes(body[: len(body) // 2])
    (tmp_path / "other.npz").write_bytes(npz_bytes({**arrays, "x_train": 255 - arrays["x_train"]}))
    write_params(arrays, ingest={**ingest_settings, "retries": 1})
    assert ingest_module.main() == code
    err = capsys.readouterr().err
    assert "[ingest] FAILED: " in err
    assert message in err
    assert not Path("data").exists()


# ---------------------------------------------------------------- data: schema violations not covered elsewhere


def test_raw_images_with_nan_and_inf_are_named_and_located(project, arrays, params):
    from tasks.validate import validate

    images = arrays["x_train"].astype(np.float32)
    images[1, 0, 0], images[3, 5, 5] = np.nan, np.inf
    save_arrays(Path("data/raw"), {**arrays, "x_train": images})
    with pytest.raises(StageError) as err:
        validate(params)
    message = str(err.value)
    assert message.startswith("raw data failed 3 check(s):")
    assert (
        "x_train: check 'dtype(<class 'numpy.uint8'>)' failed: expected dtype <class 'numpy.uint8'>, got float32"
        in message
    )
    assert "x_train: check 'nullable' failed in 1 value(s); first failing samples [1]" in message
    assert "x_train: check 'pixel_range' failed in 1 value(s); first failing samples [3]" in message
    assert not Path("reports").exists()


def test_raw_float_labels_with_nan_are_named_not_a_crash(project, arrays, params):
    """Counting classes of float labels used to raise a TypeError from np.bincount."""
    from tasks.validate import validate

    labels = arrays["y_test"].astype(np.float32)
    labels[labels == 4] = np.nan
    save_arrays(Path("data/raw"), {**arrays, "y_test": labels})
    with pytest.raises(StageError) as err:
        validate(params)
    message = str(err.value)
    assert "y_test: check 'dtype(<class 'numpy.uint8'>)' failed" in message
    assert "y_test: check 'nullable' failed in 2 value(s)" in message
    assert "y_test: check 'all_classes_present' failed: missing classes [4]" in message


def test_out_of_range_label_does_not_hide_a_missing_class():
    """Labels used to be clipped to 0..9 before counting, so a 12 passed for the missing 9."""
    from tasks.schemas import check_array, raw_labels

    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12], np.uint8)
    checks = {f.check: str(f) for f in check_array(raw_labels(10), "y_train", labels)}
    assert checks["all_classes_present"] == "y_train: check 'all_classes_present' failed: missing classes [9]"
    assert checks["label_range"].startswith(
        "y_train: check 'label_range' failed in 1 value(s); first failing samples [9]"
    )


def test_processed_labels_out_of_range_are_refused(arrays):
    from tasks.preprocess import preprocess_arrays

    labels = arrays["y_train"].copy()
    labels[[4, 9]] = [12, 200]
    with pytest.raises(StageError) as err:
        preprocess_arrays({**arrays, "y_train": labels})
    assert str(err.value).startswith("processed data failed 1 check(s); nothing written:")
    assert "y_train: check 'label_range' failed in 2 value(s); first failing samples [4, 9]" in str(err.value)


def test_processed_labels_missing_a_class_are_refused(arrays):
    from tasks.preprocess import preprocess_arrays

    labels = np.where(arrays["y_test"] == 7, 1, arrays["y_test"]).astype(np.uint8)
    with pytest.raises(StageError, match=r"y_test: check 'all_classes_present' failed: missing classes \[7\]"):
        preprocess_arrays({**arrays, "y_test": labels})


def test_processed_nan_and_inf_are_refused_before_writing(project, arrays, make_params):
    from tasks.preprocess import preprocess

    images = arrays["x_test"].astype(np.float32)
    images[2, 1, 1], images[5, 2, 2] = np.nan, -np.inf
    save_arrays(Path("data/raw"), {**arrays, "x_test": images})
    with pytest.raises(StageError) as err:
        preprocess(make_params())
    message = str(err.value)
    assert "x_test: check 'nullable' failed in 1 value(s); first failing samples [2]" in message
    assert "x_test: check 'finite' failed in 1 value(s); first failing samples [5]: " in message
    assert "no NaN or inf failure cases: -inf" in message
    assert not Path("data/processed").exists()


# ---------------------------------------------------------------- params.yaml


def test_batch_size_larger_than_the_data_is_refused_naming_both_keys():
    with pytest.raises(ParamsError) as err:
        parse_params({"train": {"batch_size": 51}, "validate": {"train_size": 50}})
    assert str(err.value) == (
        "params.yaml is invalid:\n  train.batch_size: 51 is larger than the data "
        "(validate.train_size: 50 training samples); lower train.batch_size"
    )
    assert parse_params({"train": {"batch_size": 50}, "validate": {"train_size": 50}}).train.batch_size == 50


def test_batch_size_check_also_guards_flow_overrides(tmp_path, arrays):
    from flows.workspace import apply_overrides

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params(arrays)))
    before = (tmp_path / "params.yaml").read_bytes()
    with pytest.raises(ParamsError, match=r"train\.batch_size: 64 is larger than the data"):
        apply_overrides(tmp_path, {"train.batch_size": 64})
    assert (tmp_path / "params.yaml").read_bytes() == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  epochs: 5\n  epochs: 50\n", "found duplicate key 'epochs'\n  in \"params.yaml\", line 3, column 3"),
        ("train:\n\tepochs: 5\n", "found character '\\t' that cannot start any token"),
        ("train:\n  epochs: 5\n batch_size: 3\n", "expected <block end>, but found '<block mapping start>'"),
        ("train: {epochs: 5\n", "expected ',' or '}'"),
        ("--- !!python/object/apply:os.system ['touch pwned']\n", "could not determine a constructor for the tag"),
    ],
    ids=["duplicate-key", "tab", "bad-indent", "unclosed-brace", "python-tag"],
)
def test_malformed_yaml_is_named_with_file_and_line(project, text, expected):
    Path("params.yaml").write_text(text)
    with pytest.raises(ParamsError) as err:
        load_params()
    assert str(err.value).startswith("params.yaml is not valid YAML: ")
    assert expected in str(err.value)
    assert not Path("pwned").exists()


def test_params_that_are_not_utf8(project):
    Path("params.yaml").write_bytes(b"train:\n  epochs: \xff\n")
    with pytest.raises(ParamsError, match=r"params.yaml is not UTF-8 text \(invalid start byte at byte 17\)"):
        load_params()


BROKEN_PARAMS = {
    "malformed YAML": ("train:\n  epochs: [5\n", "params.yaml is not valid YAML"),
    "duplicate key": ("train:\n  epochs: 5\n  epochs: 6\n", "found duplicate key 'epochs'"),
    "unknown key": ("train:\n  epochz: 5\n", "train.epochz: unknown key"),
    "wrong type": ("train:\n  epochs: five\n", "train.epochs: Input should be a valid integer"),
    "negative epochs": ("train:\n  epochs: -3\n", "train.epochs: Input should be greater than or equal to 1 (got -3)"),
    "batch larger than data": (
        "train:\n  batch_size: 100\nvalidate:\n  train_size: 50\n",
        "train.batch_size: 100 is larger than the data (validate.train_size: 50",
    ),
}


@pytest.fixture
def full_workspace(project, arrays, processed) -> dict[str, bytes]:
    """Outputs of every stage (contents do not matter: a stage with broken params must read nothing)."""
    save_arrays(Path("data/raw"), arrays)
    save_arrays(Path("data/processed"), processed)
    for path, text in {
        "models/model.keras": "not read",
        "reports/ingest.json": "{}",
        "reports/validation.json": "{}",
        "reports/training.csv": "epoch\n",
        "reports/metrics.json": "{}",
        "reports/confusion.csv": "actual,predicted\n",
    }.items():
        Path(path).parent.mkdir(exist_ok=True)
        Path(path).write_text(text)
    return outputs(project)


@pytest.mark.parametrize("broken", BROKEN_PARAMS)
@pytest.mark.parametrize("stage", STAGES)
def test_broken_params_stop_every_stage_before_work(full_workspace, project, capsys, monkeypatch, stage, broken):
    import importlib

    text, expected = BROKEN_PARAMS[broken]
    Path("params.yaml").write_text(text)
    module = importlib.import_module(f"tasks.{stage}")
    monkeypatch.setattr(module, stage, lambda *a, **k: pytest.fail("the stage body ran"), raising=False)
    assert module.main() == 1
    err = capsys.readouterr().err
    assert f"[{stage}] FAILED: params.yaml is " in err
    assert expected in err
    assert_untouched(project, full_workspace)


# ---------------------------------------------------------------- loading: model files


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


NOT_A_MODEL = {
    "empty file": (lambda good: b"", "is not a Keras model (.keras files are zip archives)"),
    "text file": (lambda good: b"weights: lots\n", "is not a Keras model (.keras files are zip archives)"),
    "HDF5 file": (lambda good: b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "is not a Keras model (.keras files"),
    "truncated archive": (lambda good: good.read_bytes()[: good.stat().st_size // 2], "is not a Keras model"),
    "config not JSON": (
        lambda good: _zip({**_entries(good), "config.json": b"{not json"}),
        "refused to load in safe mode: Expecting property name",
    ),
    "weights missing": (
        lambda good: _zip({k: v for k, v in _entries(good).items() if k != "model.weights.h5"}),
        "refused to load in safe mode: Expected a model.weights.h5",
    ),
    "weights garbage": (
        lambda good: _zip({**_entries(good), "model.weights.h5": b"garbage"}),
        "refused to load in safe mode: Unable to synchronously open file",
    ),
    "a layer, not a model": (
        lambda good: _zip(
            {
                **_entries(good),
                "config.json": json.dumps(
                    {"module": "keras.layers", "class_name": "Dense", "config": {"units": 3}, "registered_name": None}
                ).encode(),
            }
        ),
        "holds a Dense, not a Keras model",
    ),
}


@pytest.mark.parametrize("kind", NOT_A_MODEL)
def test_file_that_is_not_a_keras_model_is_refused(model_file, tmp_path, kind):
    from tasks.modelio import load_model

    make, expected = NOT_A_MODEL[kind]
    path = tmp_path / "model.keras"
    path.write_bytes(make(model_file))
    with pytest.raises(StageError) as err:
        load_model(path)
    assert str(err.value).startswith(str(path))
    assert expected in str(err.value)


def _named_function(t):
    return t * 2


def _code_model(kind: str, tmp_path: Path, monkeypatch):
    import keras

    layers = keras.layers
    if kind == "Lambda with a lambda in a functional model":
        inputs = keras.Input((28, 28, 1))
        outputs = layers.Dense(10)(layers.Lambda(lambda t: t + 1)(layers.Flatten()(inputs)))
        return keras.Model(inputs, outputs)
    if kind == "Lambda with a named function":
        return keras.Sequential([keras.Input((4,)), layers.Lambda(_named_function), layers.Dense(2)])
    if kind == "lambda as an activation":
        return keras.Sequential([keras.Input((4,)), layers.Dense(2, activation=lambda t: t * 3)])
    if kind == "custom layer registered in this process":

        @keras.saving.register_keras_serializable(package="faults")
        class Doubler(layers.Layer):
            def call(self, x):
                return x * 2

        monkeypatch.setitem(keras.saving.get_custom_objects(), "faults>Doubler", Doubler)
        return keras.Sequential([keras.Input((4,)), Doubler(), layers.Dense(2)])
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("Lambda with a lambda in a functional model", "Lambda 'lambda"),
        ("Lambda with a named function", "Lambda 'lambda"),
        ("lambda as an activation", "could not be deserialized"),
        ("custom layer registered in this process", "Doubler 'doubler' from module 'tests.test_faults'"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_model_holding_code_is_refused_in_safe_mode(tmp_path, monkeypatch, kind, named):
    from tasks.modelio import load_model, save_model

    path = tmp_path / "model.keras"
    save_model(_code_model(kind, tmp_path, monkeypatch), path)
    with pytest.raises(StageError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}: refused to load in safe mode: ")
    assert named in str(err.value)


def test_models_of_keras_layers_still_load(tmp_path):
    """No false alarm: a functional model and the CNN, both of Keras's own layers, load."""
    import keras

    from tasks.modelio import load_model, save_model
    from tasks.train import build_model

    inputs = keras.Input((28, 28, 1))
    functional = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    for name, model in {"functional": functional, "cnn": build_model("cnn", 8)}.items():
        save_model(model, tmp_path / f"{name}.keras")
        assert load_model(tmp_path / f"{name}.keras", input_shape=(28, 28, 1)).count_params() == model.count_params()


def test_model_naming_an_outside_module_is_refused_without_importing_it(model_file, tmp_path, monkeypatch):
    """A crafted config.json pointing at any importable module: nothing from it may run."""
    from tasks.modelio import load_model

    module = tmp_path / "faults_payload.py"
    module.write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = _entries(model_file)
    config = json.loads(entries["config.json"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense.update(module="faults_payload", class_name="Payload", registered_name=None)
    path = tmp_path / "model.keras"
    path.write_bytes(_zip({**entries, "config.json": json.dumps(config).encode()}))
    with pytest.raises(StageError) as err:
        load_model(path)
    assert "refused to load in safe mode: it holds code, not only Keras layers: Payload 'dense' from module" in str(
        err.value
    )
    assert not (tmp_path / "imported").exists()
    assert "faults_payload" not in sys.modules


def test_foreign_objects_accepts_keras_classes_and_names_the_rest():
    from tasks.modelio import foreign_objects

    keras_only = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"layers": [{"module": "keras.layers", "class_name": "Dense", "config": {"name": "d"}}]},
        "compile_config": {"loss": {"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy"}},
        "shape": {"class_name": "__tuple__", "config": {"value": [28, 28]}},
    }
    assert foreign_objects(keras_only) == []
    functional = {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional"}
    assert foreign_objects(functional) == []
    assert foreign_objects({"class_name": "Evil", "module": "os", "config": {"name": "e"}}) == [
        "Evil 'e' from module 'os'"
    ]
    assert foreign_objects({"class_name": "function", "module": "builtins", "config": "system"}) == [
        "function (Python code)"
    ]
    assert foreign_objects({"module": "keras.layers", "class_name": "Dense", "registered_name": "my>Dense"}) == [
        "Dense registered as 'my>Dense'"
    ]


# ---------------------------------------------------------------- loading: arrays that would need pickle


class _Payload:
    """Unpickling this runs code: it creates a file named `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _object_arrays(marker: Path) -> dict[str, np.ndarray]:
    return {
        "object array": np.array([_Payload(marker)], dtype=object),
        "structured with an object field": np.array([(1, _Payload(marker))], dtype=[("n", "i4"), ("o", "O")]),
    }


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("kind", ["object array", "structured with an object field", "bare pickle"])
def test_load_array_refuses_anything_needing_pickle(tmp_path, kind, mmap):
    marker = tmp_path / "unpickled"
    path = tmp_path / "x_train.npy"
    if kind == "bare pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        np.save(path, _object_arrays(marker)[kind], allow_pickle=True)
    with pytest.raises(ValueError, match=f"{path}: refused to load .*arrays must be plain numeric .npy"):
        load_array(path, mmap=mmap)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["object array", "structured with an object field", "bare pickle"])
def test_decode_npz_refuses_anything_needing_pickle(tmp_path, arrays, kind):
    marker = tmp_path / "unpickled"
    if kind == "bare pickle":
        data = pickle.dumps({"x_train": _Payload(marker)})
    else:
        buffer = io.BytesIO()
        np.savez(buffer, **{**arrays, "y_train": _object_arrays(marker)[kind]})
        data = buffer.getvalue()
    with pytest.raises(SourceError, match=r"^mnist.npz: (refused|not a readable .npz file)"):
        decode_npz(data, "mnist.npz")
    assert not marker.exists()


def test_stage_refuses_object_arrays_with_a_clear_line(project, arrays, capsys, tmp_path):
    import tasks.validate as validate_module

    save_arrays(Path("data/raw"), arrays)
    np.save("data/raw/y_train.npy", _object_arrays(tmp_path / "unpickled")["object array"], allow_pickle=True)
    write_params(arrays)
    assert validate_module.main() == 1
    assert "[validate] FAILED: data/raw/y_train.npy: refused to load" in capsys.readouterr().err
    assert not (tmp_path / "unpickled").exists()


# ---------------------------------------------------------------- security: loopback, no secrets


def test_prefect_server_api_listens_on_loopback_by_default(monkeypatch):
    from prefect.settings.models.server.api import ServerAPISettings

    monkeypatch.delenv("PREFECT_SERVER_API_HOST", raising=False)
    assert ServerAPISettings.model_fields["host"].default == "127.0.0.1"
    assert ServerAPISettings().host == "127.0.0.1"


def test_servers_prefect_starts_for_us_bind_loopback(monkeypatch):
    """`mnist-pipeline run` without PREFECT_API_URL starts Prefect's ephemeral server; `serve` may start
    a runner webserver (off by default). Both listen on loopback only."""
    import prefect.server.api.server as prefect_server
    from prefect.settings.models.runner import RunnerServerSettings

    monkeypatch.delenv("PREFECT_RUNNER_SERVER_HOST", raising=False)
    assert RunnerServerSettings().host in ("localhost", "127.0.0.1")
    assert RunnerServerSettings().enable is False
    started: list[list[str]] = []
    monkeypatch.setattr(prefect_server.subprocess, "Popen", lambda args, **kwargs: started.append(args))
    port = free_port()
    try:
        prefect_server.SubprocessASGIServer(port)._run_uvicorn_command()
    finally:
        prefect_server.SubprocessASGIServer._instances.pop(port, None)
    (args,) = started
    assert args[args.index("--host") + 1] == "127.0.0.1"


def _our_files() -> list[Path]:
    found = [*REPO.glob("tasks/*.py"), *REPO.glob("flows/*.py"), *REPO.glob(".ci/*"), REPO / "prefect.yaml"]
    return [path for path in found if path.is_file()]


def test_nothing_we_start_listens_beyond_loopback():
    """No wildcard bind and no --host other than 127.0.0.1 in our code, deployment or CI."""
    wildcard = re.compile(r"0\.0\.0\.0|\[::\]|host\s*=\s*[\"']['\"]|--host[ =]+(?!127\.0\.0\.1|localhost)\S+")
    offending = {str(path.relative_to(REPO)): wildcard.findall(path.read_text()) for path in _our_files()}
    assert {path: hits for path, hits in offending.items() if hits} == {}


SECRET_KEY = re.compile(r"(?i)(passw|secret|token|credential|api_?key|access_?key|auth)")
SECRET_VALUE = re.compile(
    r"[a-z][a-z0-9+.-]*://[^/@\s]+@|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|(?i:[?&][^=]*(sig|token|key)=)"
)


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def test_params_and_committed_config_hold_no_credentials():
    params = _flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert [key for key in params if SECRET_KEY.search(key)] == []
    assert [key for key, value in params.items() if SECRET_VALUE.search(str(value))] == []
    for config in (REPO / ".dvc/config", REPO / "prefect.yaml"):
        text = config.read_text()
        assert not re.search(r"(?im)^\s*(password|secret_access_key|access_key_id|token|credentialpath)\s*[=:]", text)
        assert not SECRET_VALUE.search(text), config


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://reader:s3cret@host/mnist.npz", "https://***@host/mnist.npz"),
        ("mirror http://token@host/m is missing x", "mirror http://***@host/m is missing x"),
        ("https://host/mnist.npz?X-Amz-Signature=abc&v=1", "https://host/mnist.npz?X-Amz-Signature=***&v=1"),
        ("https://host/m?token=abc", "https://host/m?token=***"),
        ("/srv/mnist and https://host/mnist.npz", "/srv/mnist and https://host/mnist.npz"),
    ],
)
def test_redact(text, shown):
    assert redact(text) == shown


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert "s3cret" not in text and "t0ken" not in text, text


def test_credentials_in_ingest_url_are_sent_but_never_shown(project, arrays, auth_server, capsys):
    url = auth_server.url("/mnist.npz?token=t0ken")
    write_params(arrays, ingest={"source": "keras", "url": url, "url_sha256": sha256(npz_bytes(arrays))})
    assert ingest_module.main() == 0
    assert auth_server.seen == [AuthServer.expected]
    out, err = capsys.readouterr()
    record = Path("reports/ingest.json").read_text()
    assert_no_secret(out, err, record)
    shown = f"http://***@127.0.0.1:{auth_server.server_address[1]}/mnist.npz?token=***"
    assert f"[ingest] source: keras {shown}" in out
    assert json.loads(record)["source"]["location"] == shown


def test_credentials_in_mnist_mirror_are_sent_but_never_shown(project, arrays, auth_server, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_MIRROR", auth_server.url("/mnist/"))
    write_params(arrays)
    assert ingest_module.main() == 0
    out, err = capsys.readouterr()
    record = Path("reports/ingest.json").read_text()
    assert_no_secret(out, err, record)
    assert all(where.startswith("http://***@127.0.0.1:") for where in json.loads(record)["source"]["files"])


@pytest.mark.parametrize("fault", ["wrong password", "missing file", "server down", "HTTP 503"])
def test_credentials_never_shown_when_ingest_fails(project, arrays, auth_server, http_server, sleeps, capsys, fault):
    url = {
        "wrong password": auth_server.url("/mnist.npz", "reader:wrong-s3cret@"),
        "missing file": auth_server.url("/nothing.npz"),
        "server down": f"http://reader:s3cret@127.0.0.1:{free_port()}/mnist.npz?token=t0ken",
        "HTTP 503": http_server.serve("/m.npz", Reply(status=503)).replace("http://", "http://reader:s3cret@"),
    }[fault]
    write_params(arrays, ingest={"url": url, "retries": 1})
    assert ingest_module.main() in (1, EXIT_TEMPFAIL)
    out, err = capsys.readouterr()
    assert_no_secret(out, err)
    assert "***@127.0.0.1" in err
    if fault == "wrong password":
        assert "server answered HTTP 401 Unauthorized; this will not fix itself" in err


# ---------------------------------------------------------------- two flow runs in one workspace


HOLDER = """
import sys
from pathlib import Path
from flows.workspace import workspace_lock
with workspace_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def lock_holder(tmp_path) -> Iterator[subprocess.Popen]:
    """Another process (a flow run) holding the workspace lock until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_flow_run_without_waiting_is_told_who_holds_the_workspace(tmp_path, lock_holder):
    from flows.workspace import WorkspaceBusy, workspace_lock

    with pytest.raises(WorkspaceBusy) as err, workspace_lock(tmp_path, wait=False):
        pass
    assert str(err.value) == (
        f"{tmp_path} is busy: a pipeline run (pid {lock_holder.pid}) holds {tmp_path}/.dvc/tmp/mnist-pipeline.lock"
    )


def test_second_flow_run_waits_for_the_first(tmp_path, lock_holder):
    from flows.workspace import workspace_lock

    acquired = threading.Event()

    def second_run() -> None:
        with workspace_lock(tmp_path):
            acquired.set()

    thread = threading.Thread(target=second_run, daemon=True)
    thread.start()
    assert not acquired.wait(0.5)  # still waiting while the first run holds the workspace
    lock_holder.stdin.close()
    assert acquired.wait(10)
    thread.join(5)


def test_a_killed_flow_run_leaves_no_lock_behind(tmp_path, lock_holder):
    from flows.workspace import workspace_lock

    lock_holder.kill()
    lock_holder.wait()
    with workspace_lock(tmp_path, wait=False):
        pass
