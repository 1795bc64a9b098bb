"""What every stage command shares: load params once, run, turn known errors into one clear line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from tasks.config import Params, ParamsError, load_params


class StageError(RuntimeError):
    """A stage refused its input; the message says what is wrong and what to do."""


def run_stage(name: str, body: Callable[[Params], None], argv: list[str] | None = None) -> int:
    """Entry point of `python -m tasks.<stage>`: exit 0 on success, 1 with a message otherwise."""
    from tasks.sources import SourceError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner drowns the stage's own log
    started = time.perf_counter()
    try:
        params = load_params()
        body(params)
    except (ParamsError, StageError, SourceError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"[{name}] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"[{name}] done in {time.perf_counter() - started:.1f}s", flush=True)
    return 0
