"""preprocess: exactly the seed's transform, checked by the processed schema before it is written."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from tasks.config import ARRAY_NAMES, Params
from tasks.io import load_arrays, save_arrays
from tasks.schemas import check_array, processed_images, raw_labels
from tasks.stage import StageError, run_stage

RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")


def scale_images(images: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 28, 28, 1) float32 in [0, 1], as the seed does it."""
    out = np.asarray(images).reshape(images.shape[0], 28, 28, 1).astype(np.float32)
    out /= np.float32(scale)
    return out


def preprocess_arrays(raw: dict[str, np.ndarray], scale: float = 255.0, max_indices: int = 10) -> dict[str, np.ndarray]:
    """Scale both image sets and check them; labels pass through unchanged, checked again all the same."""
    processed: dict[str, np.ndarray] = {}
    failures = []
    for name in ARRAY_NAMES:
        if name.startswith("x"):
            processed[name] = scale_images(raw[name], scale)
            failures += check_array(processed_images(len(raw[name])), name, processed[name], max_indices)
        else:
            processed[name] = np.asarray(raw[name])
            failures += check_array(raw_labels(len(raw[name])), name, processed[name], max_indices)
    if failures:
        summary = "\n  ".join(str(f) for f in failures)
        raise StageError(f"processed data failed {len(failures)} check(s); nothing written:\n  {summary}")
    return processed


def preprocess(params: Params) -> None:
    raw = load_arrays(RAW_DIR, ARRAY_NAMES)
    started = time.perf_counter()
    processed = preprocess_arrays(raw, params.preprocess.scale, params.validate_.max_failing_indices)
    print(f"[preprocess] scaled and checked in {time.perf_counter() - started:.2f}s", flush=True)
    save_arrays(PROCESSED_DIR, processed)
    shapes = {n: processed[n].shape for n in ARRAY_NAMES}
    print(f"[preprocess] wrote {PROCESSED_DIR}: {shapes}", flush=True)


def main() -> int:
    return run_stage("preprocess", preprocess)


if __name__ == "__main__":
    sys.exit(main())
