"""pandera schemas of the raw and processed arrays, validated directly with the xarray backend.

A DataArraySchema checks dtype, named dims, exact sizes and element-wise ranges of all
70,000 images in a fraction of a second (flattening to a DataFrame would be ~10x slower).
Failures are summarised as: which check, how many values failed, which samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandera.xarray as px
import xarray as xr
from pandera.errors import SchemaError, SchemaErrors

SCHEMA_VERSION = "1"
IMAGE = 28
IMAGE_DIMS = ("sample", "row", "col")
PROCESSED_DIMS = ("sample", "row", "col", "channel")


def _pixel_range(da: xr.DataArray) -> xr.DataArray:
    return (da >= 0) & (da <= 255)


def _label_range(da: xr.DataArray) -> xr.DataArray:
    return (da >= 0) & (da <= 9)


def _unit_range(da: xr.DataArray) -> xr.DataArray:
    return (da >= 0.0) & (da <= 1.0)


def _finite(da: xr.DataArray) -> xr.DataArray:
    return xr.apply_ufunc(np.isfinite, da)


def label_counts(labels: np.ndarray) -> np.ndarray:
    """How often each class 0..9 occurs; out-of-range, fractional or NaN labels count for none."""
    flat = np.asarray(labels).ravel()
    valid = flat[np.isin(flat, np.arange(10))]
    return np.bincount(valid.astype(np.int64), minlength=10)[:10]


def _all_classes(da: xr.DataArray) -> bool:
    return bool(np.all(label_counts(da.values) > 0))


def raw_images(n: int) -> px.DataArraySchema:
    return px.DataArraySchema(
        dtype=np.uint8,
        dims=IMAGE_DIMS,
        sizes={"sample": n, "row": IMAGE, "col": IMAGE},
        checks=[px.Check(_pixel_range, name="pixel_range", error="pixels must be in 0..255")],
    )


def raw_labels(n: int) -> px.DataArraySchema:
    return px.DataArraySchema(
        dtype=np.uint8,
        dims=("sample",),
        sizes={"sample": n},
        checks=[
            px.Check(_label_range, name="label_range", error="labels must be in 0..9"),
            px.Check(_all_classes, name="all_classes_present", error="all ten classes 0..9 must occur"),
        ],
    )


def processed_images(n: int) -> px.DataArraySchema:
    return px.DataArraySchema(
        dtype=np.float32,
        dims=PROCESSED_DIMS,
        sizes={"sample": n, "row": IMAGE, "col": IMAGE, "channel": 1},
        checks=[
            px.Check(_finite, name="finite", error="no NaN or inf"),
            px.Check(_unit_range, name="unit_range", error="values must be in [0, 1]"),
        ],
    )


@dataclass(frozen=True)
class Failure:
    array: str
    check: str
    message: str
    count: int | None = None
    samples: tuple[int, ...] = ()

    def __str__(self) -> str:
        where = f" in {self.count} value(s); first failing samples {list(self.samples)}" if self.count else ""
        return f"{self.array}: check '{self.check}' failed{where}: {self.message}"


def _located(array: str, check: str, message: str, bad: np.ndarray, max_indices: int) -> Failure:
    per_sample = bad.reshape(bad.shape[0], -1).any(axis=1)
    samples = tuple(int(i) for i in np.flatnonzero(per_sample)[:max_indices])
    return Failure(array, check, message, int(bad.sum()), samples)


def _failure(array: str, error: SchemaError, max_indices: int, data: np.ndarray) -> Failure:
    # pandera's lazy errors carry no data (error.data is None): the caller passes the array itself.
    check = getattr(error.check, "name", None) or str(error.check)
    message = str(error).splitlines()[0][:300]
    output = error.check_output
    if isinstance(output, xr.DataArray) and output.ndim >= 1:
        return _located(array, check, message, ~np.asarray(output, dtype=bool), max_indices)
    if check == "nullable" and data.ndim >= 1 and np.issubdtype(data.dtype, np.floating):
        return _located(array, check, message, np.isnan(data), max_indices)
    if check == "all_classes_present":
        counts = label_counts(data)
        message = f"missing classes {[int(c) for c in np.flatnonzero(counts == 0)]}"
    return Failure(array, check, message)


def check_array(schema: px.DataArraySchema, name: str, array: np.ndarray, max_indices: int = 10) -> list[Failure]:
    """Validate one array; return every failure (lazy mode) instead of stopping at the first."""
    if array.ndim != len(schema.dims):
        return [Failure(name, "dims", f"expected {len(schema.dims)} dims {schema.dims}, got shape {array.shape}")]
    try:
        schema.validate(xr.DataArray(array, dims=schema.dims), lazy=True)
    except SchemaErrors as exc:
        return [_failure(name, err, max_indices, array) for err in exc.schema_errors]
    except SchemaError as exc:
        return [_failure(name, exc, max_indices, array)]
    return []
