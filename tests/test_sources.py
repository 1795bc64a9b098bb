"""Sources: IDX and npz decoding, HTTP fetching with retries, local and remote mirrors."""

from __future__ import annotations

import gzip
import io
import re

import numpy as np
import pytest

from tasks.digests import IDX_FILES
from tasks.sources import (
    SourceError,
    decode_idx,
    decode_npz,
    fetch,
    mirror_candidates,
    read_location,
    read_mirror_file,
)
from tests.conftest import Reply, idx_bytes, npz_bytes, sha256

FAST = {"timeout": 5.0, "retries": 2}

# ---------------------------------------------------------------- decode_idx


@pytest.mark.parametrize("name", ["x_train", "y_train", "x_test", "y_test"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_decode_idx_round_trip(arrays, name, gz):
    data = idx_bytes(arrays[name])
    if gz:
        data = gzip.compress(data)
    decoded = decode_idx(data, name, expect_ndim=arrays[name].ndim)
    assert decoded.dtype == np.uint8
    assert decoded.shape == arrays[name].shape
    np.testing.assert_array_equal(decoded, arrays[name])


def test_decode_idx_truncated_body(arrays):
    data = idx_bytes(arrays["x_test"])[:-100]
    with pytest.raises(SourceError) as err:
        decode_idx(data, "t10k-images-idx3-ubyte", expect_ndim=3)
    message = str(err.value)
    assert message.startswith("t10k-images-idx3-ubyte: truncated")
    assert f"header declares shape (20, 28, 28) = {16 + 20 * 784} bytes, file has {16 + 20 * 784 - 100}" in message


def test_decode_idx_truncated_gzipped(arrays):
    data = gzip.compress(idx_bytes(arrays["y_test"]))[:-12]
    with pytest.raises(SourceError, match="t10k-labels-idx1-ubyte: corrupt gzip stream"):
        decode_idx(data, "t10k-labels-idx1-ubyte", expect_ndim=1)


@pytest.mark.parametrize("size", [0, 3])
def test_decode_idx_no_header(size):
    with pytest.raises(SourceError, match=rf"labels: truncated IDX file \({size} bytes, no header\)"):
        decode_idx(b"\x00\x00\x08\x01"[:size], "labels", expect_ndim=1)


def test_decode_idx_truncated_header():
    with pytest.raises(SourceError, match=r"images: truncated IDX header \(10 of 16 bytes\)"):
        decode_idx(b"\x00\x00\x08\x03" + b"\x00" * 6, "images", expect_ndim=3)


def test_decode_idx_longer_than_header(arrays):
    with pytest.raises(SourceError, match="labels: longer than its header says"):
        decode_idx(idx_bytes(arrays["y_test"]) + b"\x00", "labels", expect_ndim=1)


@pytest.mark.parametrize(
    "magic",
    [b"\x00\x00\x09\x03", b"\x00\x00\x0d\x03", b"\x01\x00\x08\x03", b"PK\x03\x04"],
    ids=["int8", "float32", "nonzero-lead", "zip"],
)
def test_decode_idx_wrong_magic_number(arrays, magic):
    data = magic + idx_bytes(arrays["x_test"])[4:]
    with pytest.raises(SourceError) as err:
        decode_idx(data, "t10k-images-idx3-ubyte", expect_ndim=3)
    assert f"t10k-images-idx3-ubyte: wrong magic number 0x{magic.hex()} (expected 0x00000803" in str(err.value)


def test_decode_idx_wrong_number_of_dimensions(arrays):
    """A labels file (1 dim) where images (3 dims) were expected, and the reverse."""
    with pytest.raises(SourceError, match=r"wrong magic number 0x00000801 \(expected 0x00000803: .* 3 dimension"):
        decode_idx(idx_bytes(arrays["y_test"]), "t10k-images-idx3-ubyte", expect_ndim=3)
    with pytest.raises(SourceError, match=r"wrong magic number 0x00000803 \(expected 0x00000801: .* 1 dimension"):
        decode_idx(idx_bytes(arrays["x_test"]), "t10k-labels-idx1-ubyte", expect_ndim=1)


def test_decode_idx_reads_the_declared_dimensions():
    """Dims come from the header: 27x27 images decode as such and are caught later by digest and schema."""
    images = np.arange(2 * 27 * 27, dtype=np.uint8).reshape(2, 27, 27)
    assert decode_idx(idx_bytes(images), "x", expect_ndim=3).shape == (2, 27, 27)


# ---------------------------------------------------------------- decode_npz


def test_decode_npz_round_trip(arrays):
    decoded = decode_npz(npz_bytes(arrays), "mnist.npz")
    assert sorted(decoded) == sorted(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(decoded[name], array)
        assert decoded[name].dtype == np.uint8


def test_decode_npz_missing_array(arrays):
    partial = {k: v for k, v in arrays.items() if k != "y_test"}
    with pytest.raises(SourceError, match=r"mnist.npz: missing arrays \['y_test'\]"):
        decode_npz(npz_bytes(partial), "mnist.npz")


def test_decode_npz_refuses_object_arrays(arrays):
    bad = {**arrays, "y_test": np.array([{"evil": 1}] * 3, dtype=object)}
    with pytest.raises(SourceError, match=r"mnist\.npz: refused .*pickle"):
        decode_npz(npz_bytes(bad), "mnist.npz")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [b"", b"not a zip at all", npz_bytes({"x_train": np.zeros(3)})[:-30], npy_bytes(np.arange(3))],
    ids=["empty", "text", "cut", "npy-not-npz"],
)
def test_decode_npz_garbage(data):
    with pytest.raises(SourceError, match=r"^mnist\.npz: not a readable \.npz file \(not a zip archive"):
        decode_npz(data, "mnist.npz")


# ---------------------------------------------------------------- fetch over HTTP


def test_fetch_returns_the_body(http_server, sleeps):
    url = http_server.serve("/mnist.npz", b"payload" * 1000)
    assert fetch(url, sha256=sha256(b"payload" * 1000), **FAST) == b"payload" * 1000
    assert http_server.hits["/mnist.npz"] == 1
    assert sleeps == []


def test_fetch_corrupted_download_is_retried_then_fails(http_server, sleeps):
    good, bad = b"the real bytes", b"the real bytez"
    url = http_server.serve("/mnist.npz", bad)
    with pytest.raises(SourceError) as err:
        fetch(url, sha256=sha256(good), timeout=5.0, retries=3, backoff=0.5)
    message = str(err.value)
    assert message.startswith(f"{url}: failed after 4 attempt(s)")
    assert f"corrupted download: SHA-256 {sha256(bad)}, pinned {sha256(good)}" in message
    assert "MNIST_MIRROR" in message
    assert http_server.hits["/mnist.npz"] == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_fetch_corrupted_once_then_good(http_server, sleeps):
    good = b"the real bytes"
    url = http_server.serve("/mnist.npz", b"garbled", good)
    assert fetch(url, sha256=sha256(good), **FAST) == good
    assert http_server.hits["/mnist.npz"] == 2
    assert len(sleeps) == 1


def test_fetch_404_is_not_retried(http_server, sleeps):
    url = http_server.url("/missing.npz")
    with pytest.raises(SourceError) as err:
        fetch(url, **FAST)
    assert f"{url}: server answered HTTP 404" in str(err.value)
    assert "will not fix itself" in str(err.value)
    assert http_server.hits["/missing.npz"] == 1
    assert sleeps == []


def test_fetch_403_is_not_retried(http_server, sleeps):
    url = http_server.serve("/secret", Reply(status=403))
    with pytest.raises(SourceError, match="HTTP 403"):
        fetch(url, **FAST)
    assert http_server.hits["/secret"] == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_fetch_transient_http_error_is_retried_then_fails(http_server, sleeps, status):
    url = http_server.serve("/flaky", Reply(status=status))
    with pytest.raises(SourceError) as err:
        fetch(url, timeout=5.0, retries=2, backoff=0.25)
    assert f"{url}: failed after 3 attempt(s), last error: HTTP {status}" in str(err.value)
    assert http_server.hits["/flaky"] == 3
    assert sleeps == [0.25, 0.5]


def test_fetch_500_then_success(http_server, sleeps):
    url = http_server.serve("/flaky", Reply(status=500), Reply(status=502), b"finally")
    assert fetch(url, **FAST) == b"finally"
    assert http_server.hits["/flaky"] == 3


def test_fetch_dropped_connection_is_retried(http_server, sleeps):
    url = http_server.serve("/cut", Reply(body=b"x" * 1000, declared_length=5000))
    with pytest.raises(SourceError, match="connection closed after 1000 of 5000 bytes"):
        fetch(url, timeout=5.0, retries=1)
    assert http_server.hits["/cut"] == 2


def test_fetch_unreachable_host(sleeps):
    with pytest.raises(SourceError, match="failed after 2 attempt"):
        fetch("http://127.0.0.1:9/nothing", timeout=1.0, retries=1)
    assert len(sleeps) == 1


def test_fetch_retries_zero_means_one_attempt(http_server, sleeps):
    url = http_server.serve("/flaky", Reply(status=500))
    with pytest.raises(SourceError, match="failed after 1 attempt"):
        fetch(url, timeout=5.0, retries=0)
    assert http_server.hits["/flaky"] == 1
    assert sleeps == []


# ---------------------------------------------------------------- read_location


def test_read_location_local_path_and_file_url(npz_file):
    data = npz_file.read_bytes()
    assert read_location(str(npz_file), sha256=sha256(data), **FAST) == data
    assert read_location(f"file://{npz_file}", **FAST) == data


def test_read_location_missing_file(tmp_path):
    with pytest.raises(SourceError, match=f"{tmp_path}/nope.npz: no such file"):
        read_location(str(tmp_path / "nope.npz"), **FAST)


def test_read_location_local_file_with_wrong_digest(npz_file):
    with pytest.raises(SourceError, match=r"differs from the pinned 0{64}; the file is corrupt"):
        read_location(str(npz_file), sha256="0" * 64, **FAST)


def test_read_location_url(http_server):
    url = http_server.serve("/mnist.npz", b"npz bytes")
    assert read_location(url, sha256=sha256(b"npz bytes"), **FAST) == b"npz bytes"


# ---------------------------------------------------------------- mirrors


def test_mirror_candidates_prefer_gzip():
    assert mirror_candidates("http://host/mnist/", "t10k-labels-idx1-ubyte") == [
        "http://host/mnist/t10k-labels-idx1-ubyte.gz",
        "http://host/mnist/t10k-labels-idx1-ubyte",
    ]


@pytest.mark.parametrize("kind", ["mirror_gz", "mirror_plain"])
def test_read_mirror_file_local_folder(request, arrays, kind):
    folder = request.getfixturevalue(kind)
    stem = IDX_FILES["y_train"]
    where, data = read_mirror_file(str(folder), stem, **FAST)
    assert where == str(folder / stem) + (".gz" if kind == "mirror_gz" else "")
    np.testing.assert_array_equal(decode_idx(data, where, 1), arrays["y_train"])


def test_read_mirror_file_file_url(mirror_plain, arrays, sleeps):
    stem = IDX_FILES["y_test"]
    where, data = read_mirror_file(f"file://{mirror_plain}", stem, **FAST)
    assert where.endswith(f"{mirror_plain}/{stem}")
    np.testing.assert_array_equal(decode_idx(data, where, 1), arrays["y_test"])
    assert sleeps == []


def test_read_mirror_file_missing_everywhere(tmp_path):
    stem = IDX_FILES["x_test"]
    with pytest.raises(SourceError) as err:
        read_mirror_file(str(tmp_path), stem, **FAST)
    assert str(err.value).startswith(
        f"mirror {tmp_path} is missing {stem}: looked for {tmp_path}/{stem}.gz, {tmp_path}/{stem}. "
    )
    assert "put the missing one there, or point MNIST_MIRROR elsewhere" in str(err.value)


def test_read_mirror_file_base_url_gzipped(http_server, arrays, sleeps):
    stem = IDX_FILES["y_test"]
    body = gzip.compress(idx_bytes(arrays["y_test"]))
    http_server.serve(f"/mnist/{stem}.gz", body)
    where, data = read_mirror_file(http_server.url("/mnist/"), stem, **FAST)
    assert (where, data) == (http_server.url(f"/mnist/{stem}.gz"), body)
    assert http_server.hits[f"/mnist/{stem}"] == 0


def test_read_mirror_file_base_url_plain_after_gz_404(http_server, arrays, sleeps):
    stem = IDX_FILES["y_test"]
    http_server.serve(f"/mnist/{stem}", idx_bytes(arrays["y_test"]))
    where, data = read_mirror_file(http_server.url("/mnist"), stem, **FAST)
    assert where == http_server.url(f"/mnist/{stem}")
    np.testing.assert_array_equal(decode_idx(data, where, 1), arrays["y_test"])
    assert http_server.hits[f"/mnist/{stem}.gz"] == 1  # a 404 is an answer, not retried
    assert sleeps == []


def test_read_mirror_file_base_url_missing(http_server, sleeps):
    stem = IDX_FILES["y_test"]
    base = http_server.url("/mnist")
    with pytest.raises(
        SourceError, match=re.escape(f"mirror {base} is missing {stem}: looked for {base}/{stem}.gz, {base}/{stem}")
    ):
        read_mirror_file(base, stem, **FAST)


def test_read_mirror_file_base_url_server_error_is_not_mistaken_for_missing(http_server, arrays, sleeps):
    stem = IDX_FILES["y_test"]
    http_server.serve(f"/mnist/{stem}.gz", Reply(status=500))
    http_server.serve(f"/mnist/{stem}", idx_bytes(arrays["y_test"]))
    with pytest.raises(SourceError, match=r"failed after 3 attempt.*HTTP 500"):
        read_mirror_file(http_server.url("/mnist"), stem, **FAST)
    assert http_server.hits[f"/mnist/{stem}.gz"] == 3


def test_mirror_folder_that_does_not_exist_is_named_as_such(tmp_path):
    from tasks.sources import SourceError, read_mirror_file

    with pytest.raises(SourceError, match=r"mirror folder .*/nowhere does not exist .*as an absolute path"):
        read_mirror_file(str(tmp_path / "nowhere"), "train-images-idx3-ubyte", timeout=1, retries=0)
