"""What every stage command shares: load params once, run, turn known errors into one clear line."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from tasks.config import Params, ParamsError, load_params
from tasks.errors import SourceError, StageError, redact

__all__ = ["StageError", "run_stage"]

EXIT_FAILED = 1
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: a retry may help (flows/stages.py TEMPFAIL retries the task)
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def describe(exc: BaseException) -> str:
    """One line for the user: disk-full errors say what to do and that nothing was replaced."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (
            f"disk full{where} ({exc.strerror or os.strerror(exc.errno)}): free some space and rerun; "
            "the previous outputs were kept and nothing half-written was left behind"
        )
    return redact(str(exc))


def exit_code(exc: BaseException) -> int:
    """75 for network trouble that outlasted the retries (worth trying again later), 1 otherwise."""
    return EXIT_TEMPFAIL if isinstance(exc, SourceError) and exc.transient else EXIT_FAILED


def _terminate(signum: int, frame) -> None:
    # SIGTERM's default kills Python on the spot; as SystemExit it unwinds, so atomic writes drop their temp files.
    raise SystemExit(128 + signum)


def run_stage(name: str, body: Callable[[Params], None], argv: list[str] | None = None) -> int:
    """Entry point of `python -m tasks.<stage>`: exit 0 on success, 1 (or 75) with a message otherwise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner drowns the stage's own log
    started = time.perf_counter()
    main_thread = threading.current_thread() is threading.main_thread()  # only there may handlers be set
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        params = load_params()
        body(params)
    except (ParamsError, StageError, SourceError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"[{name}] FAILED: {describe(exc)}", file=sys.stderr, flush=True)
        return exit_code(exc)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    print(f"[{name}] done in {time.perf_counter() - started:.1f}s", flush=True)
    return 0
