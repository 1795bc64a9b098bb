"""Where MNIST comes from: HTTP downloads, mirrors of the four IDX files, local npz files.

Pure decoders (`decode_idx`, `decode_npz`) plus the one piece that touches the network
(`fetch`), which times out, retries transient failures, shows progress, and only ever leaves a
complete file behind.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks.digests import IDX_FILES
from tasks.errors import SourceError, redact

IDX_UINT8 = 0x08
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


# ---------------------------------------------------------------- decoding (pure)


def decode_idx(data: bytes, name: str, expect_ndim: int) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) into a uint8 array, checking every header field."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"{name}: corrupt gzip stream ({exc}); fetch the file again") from None
    if len(data) < 4:
        raise SourceError(f"{name}: truncated IDX file ({len(data)} bytes, no header)")
    zero, dtype, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype != IDX_UINT8 or ndim != expect_ndim:
        raise SourceError(
            f"{name}: wrong magic number 0x{data[:4].hex()} (expected 0x0000080{expect_ndim}: "
            f"unsigned bytes in {expect_ndim} dimension(s)); is this the right file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SourceError(f"{name}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise SourceError(f"{name}: {state}: header declares shape {dims} = {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def decode_npz(data: bytes, name: str) -> dict[str, np.ndarray]:
    """Read Keras's mnist.npz without pickle; a missing array or a broken zip is named."""
    if not zipfile.is_zipfile(io.BytesIO(data)):  # np.load would try a .npy or a pickle instead
        raise SourceError(f"{name}: not a readable .npz file (not a zip archive: truncated, or another format)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = sorted(set(IDX_FILES) - set(npz.files))
            if missing:
                raise SourceError(f"{name}: missing arrays {missing} (has {sorted(npz.files)})")
            return {key: npz[key] for key in IDX_FILES}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"{name}: not a readable .npz file ({exc})") from None
    except ValueError as exc:
        raise SourceError(f"{name}: refused ({exc}); object arrays need pickle") from None


# ---------------------------------------------------------------- fetching (I/O)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "file://"))


def _progress(name: str, done: int, total: int | None, last: list[float]) -> None:
    now = time.monotonic()
    if now - last[0] < 1.0 and (total is None or done < total):
        return
    last[0] = now
    share = f" {100 * done / total:5.1f}% of {total / 1e6:.1f} MB" if total else ""
    print(f"  downloading {name}: {done / 1e6:.1f} MB{share}", file=sys.stderr, flush=True)


def _request(url: str) -> urllib.request.Request:
    """urllib ignores `user:pass@` in a URL (it looks the whole thing up as a host name): send it as
    Basic auth instead, on this host only (an unredirected header is not forwarded on redirects)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    request = urllib.request.Request(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
    user = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    return request


def _download_once(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(_request(url), timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        chunks, done, last = [], 0, [0.0]
        name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
        while chunk := response.read(1 << 16):
            chunks.append(chunk)
            done += len(chunk)
            _progress(name, done, total, last)
    if total is not None and done != total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")
    return b"".join(chunks)


def _reason(exc: BaseException, timeout: float) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError):
        return f"timed out: no data for {timeout:g}s (ingest.timeout_s)"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection closed mid-transfer ({reason!r})"
    if isinstance(reason, http.client.HTTPException) and not isinstance(reason, OSError):
        return f"not an HTTP answer ({type(reason).__name__}: {' '.join(str(reason).split())[:100]})"
    return str(reason) or type(reason).__name__


def fetch(
    url: str,
    *,
    timeout: float,
    retries: int,
    sha256: str | None = None,
    check: Callable[[bytes], object] | None = None,
    backoff: float = 1.0,
) -> bytes:
    """Download url into memory, retrying transient failures with exponential backoff.

    404/403 and other client errors are not retried: they will not fix themselves. A body whose
    SHA-256 differs from the pinned one, or that `check` refuses (a SourceError), counts as a
    corrupted transfer and is retried. Messages never show the URL's credentials.
    """
    shown = redact(url)
    for attempt in range(retries + 1):
        try:
            data = _download_once(url, timeout)
            if sha256 and (got := hashlib.sha256(data).hexdigest()) != sha256:
                raise ConnectionError(f"corrupted download: SHA-256 {got}, pinned {sha256}")
            if check:
                check(data)
            return data
        except urllib.error.HTTPError as exc:
            if exc.code not in TRANSIENT_HTTP:
                raise SourceError(
                    f"{shown}: server answered HTTP {exc.code} {exc.reason}; this will not fix itself. "
                    "Point MNIST_MIRROR at a folder or URL holding the four IDX files, "
                    "or set ingest.source in params.yaml"
                ) from None
            reason = f"HTTP {exc.code}"
        except http.client.InvalidURL as exc:
            raise SourceError(f"{shown}: not a valid URL ({exc}); check ingest.url or MNIST_MIRROR") from None
        except SourceError as exc:  # check refused the body
            reason = f"corrupted download: {exc}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = _reason(exc, timeout)  # refused, reset, timed out, cut short, not HTTP at all
        reason = redact(reason)
        if attempt < retries:
            delay = backoff * 2**attempt
            print(f"  {shown}: {reason}; retry {attempt + 1}/{retries} in {delay:.0f}s", file=sys.stderr, flush=True)
            time.sleep(delay)
    raise SourceError(
        f"{shown}: failed after {retries + 1} attempt(s), last error: {reason}. "
        "Offline? Set MNIST_MIRROR to a local folder with the four IDX files",
        transient=True,
    )


def read_location(location: str, *, timeout: float, retries: int, sha256: str | None = None) -> bytes:
    """Bytes of a local path or a URL, the same way for both."""
    if is_url(location) and not location.startswith("file://"):
        return fetch(location, timeout=timeout, retries=retries, sha256=sha256)
    path = Path(location.removeprefix("file://"))
    if not path.is_file():
        raise SourceError(f"{path}: no such file; check ingest settings or MNIST_MIRROR")
    data = path.read_bytes()
    if sha256 and (got := hashlib.sha256(data).hexdigest()) != sha256:
        raise SourceError(f"{path}: SHA-256 {got} differs from the pinned {sha256}; the file is corrupt")
    return data


def mirror_candidates(mirror: str, stem: str) -> list[str]:
    """The places one IDX file may lie in a mirror: gzipped first, then plain."""
    base = mirror.rstrip("/")
    return [f"{base}/{stem}.gz", f"{base}/{stem}"]


def read_mirror_file(
    mirror: str, stem: str, *, timeout: float, retries: int, check: Callable[[bytes], object] | None = None
) -> tuple[str, bytes]:
    """Find one of the four files in a mirror folder or URL; name every place looked in if absent.

    A download that `check` refuses (say, a truncated gzip stream) is fetched again."""
    local = mirror.removeprefix("file://")
    if (not is_url(mirror) or mirror.startswith("file://")) and not Path(local).is_dir():
        raise SourceError(
            f"mirror folder {local} does not exist (resolved from {Path.cwd()}): set MNIST_MIRROR or "
            "ingest.mirror to the folder holding the four IDX files, as an absolute path"
        )
    tried = []
    for candidate in mirror_candidates(mirror, stem):
        if not is_url(candidate) or candidate.startswith("file://"):
            path = Path(candidate.removeprefix("file://"))
            if path.is_file():
                return candidate, path.read_bytes()
            tried.append(candidate)
            continue
        try:
            return candidate, fetch(candidate, timeout=timeout, retries=retries, check=check)
        except SourceError as exc:
            if "HTTP 404" not in str(exc):
                raise
            tried.append(candidate)
    raise SourceError(
        redact(
            f"mirror {mirror} is missing {stem}: looked for {', '.join(tried)}. A mirror holds the four original "
            "IDX files of MNIST (gzipped or not): put the missing one there, or point MNIST_MIRROR elsewhere"
        )
    )
