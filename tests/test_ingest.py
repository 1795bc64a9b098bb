"""ingest: every source kind on synthetic data, digests pinned, and no output at all on bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks import ingest as ingest_module
from tasks.config import ARRAY_NAMES
from tasks.digests import IDX_FILES
from tasks.ingest import check_digests, ingest, resolve_source
from tasks.io import load_arrays, sha256_array
from tasks.sources import SourceError
from tasks.stage import StageError
from tests.conftest import Reply, digests_of, idx_bytes, npz_bytes, raw_params, sha256, snapshot, write_mirror


def assert_raw_matches(arrays: dict[str, np.ndarray]) -> None:
    raw = load_arrays(Path("data/raw"), ARRAY_NAMES)
    for name in ARRAY_NAMES:
        assert raw[name].dtype == np.uint8
        assert raw[name].shape == arrays[name].shape
        np.testing.assert_array_equal(raw[name], arrays[name])
    assert sorted(p.name for p in Path("data").iterdir()) == ["raw"]  # no temporary folders left
    assert sorted(p.name for p in Path("data/raw").iterdir()) == [f"{n}.npy" for n in sorted(ARRAY_NAMES)]


def assert_no_output(root: Path) -> None:
    assert not (root / "data").exists()
    assert not (root / "reports").exists()


# ---------------------------------------------------------------- choosing the source


def test_resolve_source_default_is_keras(params):
    assert resolve_source(params.ingest, None) == ("keras", params.ingest.url)


def test_resolve_source_environment_wins(make_params):
    params = make_params(ingest={"source": "npz", "npz_path": "/data/mnist.npz"})
    assert resolve_source(params.ingest, "/srv/mirror") == ("mirror", "/srv/mirror")
    assert resolve_source(params.ingest, None) == ("npz", "/data/mnist.npz")


@pytest.mark.parametrize(("source", "field"), [("mirror", "ingest.mirror"), ("npz", "ingest.npz_path")])
def test_resolve_source_empty_location_is_named(make_params, source, field):
    params = make_params(ingest={"source": source})
    with pytest.raises(StageError, match=f"ingest.source is '{source}' but {field} is empty"):
        resolve_source(params.ingest, None)


# ---------------------------------------------------------------- digests


def test_check_digests_returns_the_pinned_digests(arrays):
    pinned = digests_of(arrays)
    assert check_digests(arrays, pinned, "somewhere") == pinned


def test_check_digests_names_every_wrong_array_and_the_source(arrays):
    changed = {**arrays, "y_test": arrays["y_test"].copy(), "x_train": arrays["x_train"].copy()}
    changed["y_test"][0] = (changed["y_test"][0] + 1) % 10
    changed["x_train"][3, 4, 5] ^= 1
    with pytest.raises(StageError) as err:
        check_digests(changed, digests_of(arrays), "/srv/mirror")
    message = str(err.value)
    assert message.startswith("digest mismatch for x_train, y_test from /srv/mirror")
    assert (
        f"y_test: got {sha256_array(changed['y_test'])[:16]}…, pinned {digests_of(arrays)['y_test'][:16]}…" in message
    )
    assert "x_test" not in message.split("(")[0]


# ---------------------------------------------------------------- every source kind, end to end


def test_ingest_from_local_gzipped_mirror(project, make_params, mirror_gz, arrays):
    record = ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror_gz)}))
    assert_raw_matches(arrays)
    assert record["source"]["kind"] == "mirror"
    assert record["source"]["location"] == str(mirror_gz)
    expected = {
        str(mirror_gz / f"{IDX_FILES[n]}.gz"): sha256((mirror_gz / f"{IDX_FILES[n]}.gz").read_bytes())
        for n in ARRAY_NAMES
    }
    assert record["source"]["files"] == expected
    assert record["arrays"]["x_train"] == {
        "shape": [50, 28, 28],
        "dtype": "uint8",
        "sha256": digests_of(arrays)["x_train"],
    }
    assert json.loads(Path("reports/ingest.json").read_text()) == record


def test_ingest_from_local_plain_mirror(project, make_params, mirror_plain, arrays):
    record = ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror_plain)}))
    assert_raw_matches(arrays)
    assert sorted(record["source"]["files"]) == sorted(str(mirror_plain / IDX_FILES[n]) for n in ARRAY_NAMES)


def test_ingest_from_mirror_base_url(project, make_params, http_server, arrays, sleeps):
    for name in ARRAY_NAMES:
        http_server.serve(f"/mnist/{IDX_FILES[name]}.gz", gzip.compress(idx_bytes(arrays[name])))
    base = http_server.url("/mnist/")
    record = ingest(make_params(ingest={"source": "mirror", "mirror": base}))
    assert_raw_matches(arrays)
    assert record["source"]["location"] == base
    assert all(http_server.hits[f"/mnist/{IDX_FILES[n]}.gz"] == 1 for n in ARRAY_NAMES)
    assert sleeps == []


def test_ingest_from_keras_npz_over_http(project, make_params, http_server, arrays, sleeps):
    body = npz_bytes(arrays)
    url = http_server.serve("/tensorflow/mnist.npz", body)
    record = ingest(make_params(ingest={"source": "keras", "url": url, "url_sha256": sha256(body)}))
    assert_raw_matches(arrays)
    assert record["source"] == {"kind": "keras", "location": url, "files": {url: sha256(body)}}
    assert http_server.hits["/tensorflow/mnist.npz"] == 1


def test_ingest_from_local_npz(project, make_params, npz_file, arrays):
    record = ingest(make_params(ingest={"source": "npz", "npz_path": str(npz_file)}))
    assert_raw_matches(arrays)
    assert record["source"]["kind"] == "npz"


def test_mirror_environment_overrides_params(project, make_params, mirror_gz, arrays, http_server):
    url = http_server.url("/never-asked.npz")
    record = ingest(make_params(ingest={"source": "keras", "url": url}), mirror_env=str(mirror_gz))
    assert_raw_matches(arrays)
    assert record["source"]["kind"] == "mirror"
    assert http_server.hits == {}


def test_ingest_replaces_previous_output(project, make_params, mirror_gz, npz_file, arrays):
    ingest(make_params(ingest={"source": "npz", "npz_path": str(npz_file)}))
    ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror_gz)}))
    assert_raw_matches(arrays)
    assert json.loads(Path("reports/ingest.json").read_text())["source"]["kind"] == "mirror"


def test_stage_command_reads_params_yaml_and_environment(project, arrays, mirror_plain, monkeypatch, capsys):
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays)))
    monkeypatch.setenv("MNIST_MIRROR", str(mirror_plain))
    assert ingest_module.main() == 0
    assert_raw_matches(arrays)
    out = capsys.readouterr().out
    assert f"[ingest] source: mirror {mirror_plain}" in out
    assert "[ingest] done in" in out


# ---------------------------------------------------------------- bad input: clear error, no output


def corrupt_mirror(folder: Path, name: str, data: bytes) -> None:
    (folder / f"{IDX_FILES[name]}.gz").write_bytes(gzip.compress(data))


@pytest.mark.parametrize(
    ("name", "mangle", "expected"),
    [
        ("x_train", lambda b: b[:-784], "train-images-idx3-ubyte.gz: truncated: header declares shape (50, 28, 28)"),
        ("y_test", lambda b: b"\x00\x00\x08\x02" + b[4:], "t10k-labels-idx1-ubyte.gz: wrong magic number 0x00000802"),
        ("x_test", lambda b: b"\x00\x00\x0b\x03" + b[4:], "t10k-images-idx3-ubyte.gz: wrong magic number 0x00000b03"),
    ],
    ids=["truncated", "wrong-dims-in-magic", "wrong-type-in-magic"],
)
def test_bad_idx_file_stops_ingest_with_no_output(project, make_params, tmp_path, arrays, name, mangle, expected):
    mirror = write_mirror(tmp_path / "bad", arrays)
    corrupt_mirror(mirror, name, mangle(idx_bytes(arrays[name])))
    with pytest.raises(SourceError) as err:
        ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror)}))
    assert expected in str(err.value)
    assert_no_output(project)


def test_wrong_image_dimensions_stop_ingest_with_no_output(project, make_params, tmp_path, arrays):
    """27x27 images decode cleanly, but they are not the pinned data."""
    mirror = write_mirror(tmp_path / "bad", arrays)
    corrupt_mirror(mirror, "x_test", idx_bytes(arrays["x_test"][:, :27, :27]))
    with pytest.raises(StageError, match=f"digest mismatch for x_test from {mirror}"):
        ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror)}))
    assert_no_output(project)


def test_labels_out_of_range_stop_ingest_with_no_output(project, make_params, tmp_path, arrays):
    """Out-of-range labels are not the pinned labels; validate's schema names them too (test_validate)."""
    labels = arrays["y_train"].copy()
    labels[7] = 12
    mirror = write_mirror(tmp_path / "bad", {**arrays, "y_train": labels})
    with pytest.raises(StageError, match=f"digest mismatch for y_train from {mirror}"):
        ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror)}))
    assert_no_output(project)


def test_digest_mismatch_leaves_previous_output_intact(project, make_params, mirror_gz, tmp_path, arrays):
    ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror_gz)}))
    before = snapshot(project)
    other = {**arrays, "x_test": 255 - arrays["x_test"]}
    npz = tmp_path / "other.npz"
    npz.write_bytes(npz_bytes(other))
    with pytest.raises(StageError) as err:
        ingest(make_params(ingest={"source": "npz", "npz_path": str(npz)}))
    assert str(err.value).startswith(f"digest mismatch for x_test from {npz}")
    assert snapshot(project) == before


def test_mirror_missing_a_file_stops_with_no_output(project, make_params, mirror_gz):
    (mirror_gz / f"{IDX_FILES['y_test']}.gz").unlink()
    with pytest.raises(SourceError, match=f"mirror {mirror_gz} is missing t10k-labels-idx1-ubyte"):
        ingest(make_params(ingest={"source": "mirror", "mirror": str(mirror_gz)}))
    assert_no_output(project)


def test_corrupted_download_is_retried_then_fails_with_no_output(project, make_params, http_server, arrays, sleeps):
    body = npz_bytes(arrays)
    damaged = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
    url = http_server.serve("/mnist.npz", damaged)
    params = make_params(ingest={"url": url, "url_sha256": sha256(body), "retries": 2})
    with pytest.raises(SourceError) as err:
        ingest(params)
    assert f"{url}: failed after 3 attempt(s), last error: corrupted download: SHA-256 {sha256(damaged)}" in str(
        err.value
    )
    assert http_server.hits["/mnist.npz"] == 3
    assert sleeps == [1.0, 2.0]
    assert_no_output(project)


def test_http_404_is_not_retried_and_leaves_no_output(project, make_params, http_server, sleeps):
    url = http_server.url("/gone/mnist.npz")
    with pytest.raises(SourceError, match="HTTP 404"):
        ingest(make_params(ingest={"url": url, "retries": 3}))
    assert http_server.hits["/gone/mnist.npz"] == 1
    assert sleeps == []
    assert_no_output(project)


def test_http_500_is_retried_and_leaves_no_output(project, make_params, http_server, sleeps):
    url = http_server.serve("/mnist.npz", Reply(status=500))
    with pytest.raises(SourceError, match=r"failed after 4 attempt.*HTTP 500"):
        ingest(make_params(ingest={"url": url, "retries": 3}))
    assert http_server.hits["/mnist.npz"] == 4
    assert sleeps == [1.0, 2.0, 4.0]
    assert_no_output(project)


def test_http_500_then_success(project, make_params, http_server, arrays, sleeps):
    body = npz_bytes(arrays)
    url = http_server.serve("/mnist.npz", Reply(status=503), body)
    ingest(make_params(ingest={"url": url, "url_sha256": sha256(body)}))
    assert_raw_matches(arrays)
    assert http_server.hits["/mnist.npz"] == 2


def test_stage_command_fails_with_one_clear_line(project, arrays, tmp_path, monkeypatch, capsys):
    mirror = write_mirror(tmp_path / "bad", {**arrays, "y_test": arrays["y_test"][::-1].copy()})
    Path("params.yaml").write_text(yaml.safe_dump(raw_params(arrays)))
    monkeypatch.setenv("MNIST_MIRROR", str(mirror))
    assert ingest_module.main() == 1
    assert f"[ingest] FAILED: digest mismatch for y_test from {mirror}" in capsys.readouterr().err
    assert not Path("data").exists()
