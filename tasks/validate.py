"""validate: check the raw arrays against the raw schema and report what they hold.

Fails closed: any failed check exits non-zero with a summary and writes no report, so
preprocess (which depends on the report) cannot run on bad data.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from tasks.config import ARRAY_NAMES, Params
from tasks.io import load_arrays, write_json
from tasks.schemas import SCHEMA_VERSION, Failure, check_array, raw_images, raw_labels
from tasks.stage import StageError, run_stage

RAW_DIR = Path("data/raw")
REPORT = Path("reports/validation.json")
ROWS_PER_CHUNK = 8192


def pixel_stats(images: np.ndarray) -> dict[str, float]:
    """Exact mean and std of pixels scaled to [0, 1], from a 256-bin histogram built in chunks."""
    hist = np.zeros(256, dtype=np.int64)
    for start in range(0, len(images), ROWS_PER_CHUNK):
        hist += np.bincount(np.asarray(images[start : start + ROWS_PER_CHUNK]).ravel(), minlength=256)[:256]
    values = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum()
    mean = float((hist * values).sum() / total)
    std = float(np.sqrt((hist * (values - mean) ** 2).sum() / total))
    nonzero = np.flatnonzero(hist)
    return {"mean": round(mean, 6), "std": round(std, 6), "min": int(nonzero[0]), "max": int(nonzero[-1])}


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels).ravel().clip(0, 9), minlength=10)
    return {str(k): int(v) for k, v in enumerate(counts)}


def validate_raw(
    arrays: dict[str, np.ndarray], train_size: int, test_size: int, max_indices: int = 10
) -> list[Failure]:
    """Every failure of the raw schema over the four arrays; empty when the data is sound."""
    sizes = {"train": train_size, "test": test_size}
    failures: list[Failure] = []
    for name in ARRAY_NAMES:
        split = name.split("_")[1]
        schema = raw_images(sizes[split]) if name.startswith("x") else raw_labels(sizes[split])
        failures += check_array(schema, name, arrays[name], max_indices)
    return failures


def build_report(arrays: dict[str, np.ndarray]) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "passed": True,
        "checks": ["dtype uint8", "dims and sizes", "pixel_range 0..255", "label_range 0..9", "all_classes_present"],
        "samples": {"train": len(arrays["y_train"]), "test": len(arrays["y_test"])},
        "class_counts": {"train": class_counts(arrays["y_train"]), "test": class_counts(arrays["y_test"])},
        "pixels": {"train": pixel_stats(arrays["x_train"]), "test": pixel_stats(arrays["x_test"])},
    }


def validate(params: Params) -> dict:
    arrays = load_arrays(RAW_DIR, ARRAY_NAMES)
    started = time.perf_counter()
    p = params.validate_
    failures = validate_raw(arrays, p.train_size, p.test_size, p.max_failing_indices)
    print(f"[validate] raw schema checked in {time.perf_counter() - started:.2f}s", flush=True)
    if failures:
        summary = "\n  ".join(str(f) for f in failures)
        raise StageError(f"raw data failed {len(failures)} check(s):\n  {summary}")
    report = build_report(arrays)
    write_json(REPORT, report)
    print(f"[validate] ok: {report['samples']} pixel mean {report['pixels']['train']['mean']}", flush=True)
    return report


def main() -> int:
    return run_stage("validate", validate)


if __name__ == "__main__":
    sys.exit(main())
