"""Benchmark: the seed's bare Keras script against the full pipeline, on the same real MNIST.

Everything runs in a fresh temporary copy of the project (the files git knows about, tracked
or not ignored, plus `git init`), so the working copy is never touched:

- bare: `python bench/seed_script.py MIRROR`, the article's steps with no orchestration;
- cold pipeline: `dvc repro` of all five stages with no outputs, no dvc.lock and an empty DVC
  cache (run-cache included), so every stage really runs (checked: "Running stage" x5);
- a no-op `dvc repro` in the warm workspace;
- `mnist-pipeline run` with every stage skipped, with Prefect's ephemeral server and against a
  local `prefect server start` this script starts and stops itself;
- both pandera schemas over all 70,000 images, timed in this process on the real arrays.

Each process's wall time, CPU time (user+sys, its reaped descendants included) and peak RSS
come from os.wait4. Every `python` a DVC stage starts goes through a tiny shim (`python -S`,
first on PATH) that runs the real interpreter under os.wait4 and logs the stage's own wall
time, CPU time and peak RSS; its few milliseconds per stage count against the pipeline.

    python bench/benchmark.py --repeats 3 --json bench/results.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_SCRIPT = Path(__file__).resolve().with_name("seed_script.py")
PYTHON = Path(sys.executable)
BIN = PYTHON.parent
STAGES = ("ingest", "validate", "preprocess", "train", "evaluate")
OUTPUTS = ("data", "models", "reports", "dvc.lock", ".dvc/cache", ".dvc/tmp")
GIB = 1 << 30
MIB = 1 << 20

TARGET_RATIO = 0.8
TARGET_ACCURACY = 0.975
TARGET_NOOP_S = 2.0
TARGET_PEAK_BYTES = GIB
TARGET_VALIDATION_S = 1.0

SHIM = """#!{python} -S
import json, os, sys, threading, time
real, argv = {python!r}, sys.argv[1:]
name = argv[1].rsplit(".", 1)[-1] if len(argv) > 1 and argv[0] == "-m" else " ".join(argv)[:60]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(real, [real, *argv])
tensorflow, done = [], threading.Event()

def watch():  # is TensorFlow's library mapped into the stage process at any point?
    while not tensorflow and not done.wait(0.05):
        try:
            with open(f"/proc/{{pid}}/maps") as maps:
                tensorflow.extend(["yes"] if "libtensorflow" in maps.read() else [])
        except OSError:
            return

threading.Thread(target=watch, daemon=True).start()
_, status, ru = os.wait4(pid, 0)
done.set()
record = dict(stage=name, wall=time.perf_counter() - started, cpu=ru.ru_utime + ru.ru_stime,
              peak_rss=ru.ru_maxrss * 1024, returncode=os.waitstatus_to_exitcode(status),
              tensorflow=bool(tensorflow))
with open(os.environ["BENCH_STAGE_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
sys.exit(max(record["returncode"], 0))
"""


@dataclass
class Measured:
    """One process (and everything it waited for): wall seconds, CPU seconds, peak RSS in bytes."""

    wall: float
    cpu: float
    peak_rss: int
    returncode: int
    load: float  # 1-minute load average when the run ended
    output: str = field(default="", repr=False)
    stages: list[dict] = field(default_factory=list)
    accuracy: float | None = None
    model_md5: str = ""


def say(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {stamp} load {os.getloadavg()[0]:.2f}] {message}", flush=True)


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> Measured:
    """Run cmd to completion, capturing its output; rusage from os.wait4 covers its reaped children."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = started + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    return Measured(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, proc.returncode, os.getloadavg()[0], output)


def check(run: Measured, what: str) -> Measured:
    if run.returncode != 0:
        tail = "\n".join(run.output.strip().splitlines()[-25:])
        raise SystemExit(f"{what} failed (exit {run.returncode}):\n{tail}")
    return run


def project_files(src: Path) -> list[str]:
    """The working tree as git sees it: tracked files plus untracked ones that are not ignored."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=src,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({name for name in listing.split("\0") if name and (src / name).is_file()})


def describe_commit(src: Path) -> str:
    """The commit measured, marked -dirty when the working tree differs from it."""
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=src, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def make_workspace(src: Path, dest: Path) -> Path:
    for name in [*project_files(src), ".dvc/config"]:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def write_shim(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    shim.write_text(SHIM.format(python=os.fspath(PYTHON)))
    shim.chmod(0o755)
    return shim


def base_env(workspace: Path, shim_dir: Path, mirror: Path, prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        MNIST_MIRROR=os.fspath(mirror),
        PYTHONPATH=os.fspath(workspace),  # the copy's tasks/ and flows/, not the editable install
        PATH=os.pathsep.join([os.fspath(shim_dir), os.fspath(BIN), os.environ.get("PATH", "")]),
        BENCH_STAGE_LOG=os.fspath(shim_dir / "stages.jsonl"),
        PREFECT_HOME=os.fspath(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DVC_NO_ANALYTICS="1",
    )
    return env


def read_stage_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.unlink()
    return records


def run_bare(workspace: Path, env: dict[str, str], mirror: Path) -> Measured:
    cmd = [os.fspath(PYTHON), os.fspath(SEED_SCRIPT), os.fspath(mirror)]
    run = check(run_measured(cmd, workspace, env), "bare")
    found = re.findall(r"test accuracy ([0-9.]+)", run.output)
    run.accuracy = float(found[-1]) if found else None
    return run


def clear_outputs(workspace: Path) -> None:
    """No outputs, no dvc.lock, no cache, no run-cache: nothing can be restored instead of run."""
    for name in OUTPUTS:
        path = workspace / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def run_cold_pipeline(workspace: Path, env: dict[str, str]) -> Measured:
    clear_outputs(workspace)
    log = Path(env["BENCH_STAGE_LOG"])
    log.unlink(missing_ok=True)
    run = check(run_measured([os.fspath(PYTHON), "-m", "dvc", "repro"], workspace, env), "cold dvc repro")
    ran = re.findall(r"Running stage '([^']+)'", run.output)
    if sorted(ran) != sorted(STAGES):
        raise SystemExit(f"cold dvc repro ran {ran}, expected all of {STAGES}:\n{run.output[-3000:]}")
    run.stages = read_stage_log(log)
    if [s["stage"] for s in run.stages] != ran:
        raise SystemExit(f"stage log {[s['stage'] for s in run.stages]} does not match the stages run {ran}")
    run.accuracy = json.loads((workspace / "reports/metrics.json").read_text())["test_accuracy"]
    run.model_md5 = hashlib.md5((workspace / "models/model.keras").read_bytes()).hexdigest()
    run.output = ""
    return run


def run_noop(workspace: Path, env: dict[str, str]) -> Measured:
    run = check(run_measured([os.fspath(PYTHON), "-m", "dvc", "repro"], workspace, env), "no-op dvc repro")
    if "Running stage" in run.output:
        raise SystemExit(f"the no-op dvc repro ran a stage:\n{run.output[-3000:]}")
    return run


def run_flow(workspace: Path, env: dict[str, str]) -> Measured:
    cmd = [os.fspath(BIN / "mnist-pipeline"), "run", "--root", os.fspath(workspace)]
    run = check(run_measured(cmd, workspace, env), "mnist-pipeline run")
    if "stages run: none" not in run.output:
        raise SystemExit(f"the Prefect flow ran a stage:\n{run.output[-3000:]}")
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def prefect_server(env: dict[str, str], log_path: Path, timeout: float = 180) -> Iterator[tuple[str, float]]:
    """A local `prefect server start` in its own session; yields (api_url, seconds until healthy)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    cmd = [os.fspath(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"prefect server exited with {proc.returncode}; see {log_path}")
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"prefect server not healthy after {timeout:.0f}s; see {log_path}")
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.25)
        yield api, time.perf_counter() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: it and its workers only
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def time_validation(workspace: Path, repeats: int = 5) -> dict:
    """Both schemas over all 70,000 images, in this process, on the real arrays held in memory."""
    import numpy as np

    sys.path.insert(0, os.fspath(workspace))
    from tasks.schemas import check_array, processed_images
    from tasks.validate import validate_raw

    names = ("x_train", "y_train", "x_test", "y_test")
    raw = {n: np.load(workspace / "data/raw" / f"{n}.npy") for n in names}
    processed = {n: np.load(workspace / "data/processed" / f"{n}.npy") for n in ("x_train", "x_test")}

    def raw_pass() -> float:
        started = time.perf_counter()
        failures = validate_raw(raw, len(raw["y_train"]), len(raw["y_test"]))
        assert not failures, failures
        return time.perf_counter() - started

    def processed_pass() -> float:
        started = time.perf_counter()
        for name, array in processed.items():
            failures = check_array(processed_images(len(array)), name, array)
            assert not failures, failures
        return time.perf_counter() - started

    first = raw_pass() + processed_pass()
    raw_times, processed_times = [], []
    for _ in range(repeats):
        raw_times.append(raw_pass())
        processed_times.append(processed_pass())
    totals = [r + p for r, p in zip(raw_times, processed_times, strict=True)]
    return {
        "images": len(raw["x_train"]) + len(raw["x_test"]),
        "first_call_s": first,
        "raw_s": statistics.median(raw_times),
        "processed_s": statistics.median(processed_times),
        "total_s": statistics.median(totals),
        "totals_s": totals,
    }


def summarize(runs: list[Measured]) -> dict:
    return {
        "wall_s": statistics.median(r.wall for r in runs),
        "cpu_s": statistics.median(r.cpu for r in runs),
        "peak_rss": max(r.peak_rss for r in runs),
        "walls_s": [r.wall for r in runs],
        "cpus_s": [r.cpu for r in runs],
        "loads": [r.load for r in runs],
        "accuracies": [r.accuracy for r in runs],
    }


def stage_summary(runs: list[Measured]) -> dict[str, dict]:
    out = {}
    for stage in STAGES:
        records = [s for r in runs for s in r.stages if s["stage"] == stage]
        out[stage] = {
            "wall_s": statistics.median(s["wall"] for s in records),
            "cpu_s": statistics.median(s["cpu"] for s in records),
            "peak_rss": max(s["peak_rss"] for s in records),
            "tensorflow": any(s["tensorflow"] for s in records),
        }
    return out


def targets(results: dict) -> list[tuple[str, str, str, bool]]:
    bare, cold, stages = results["bare"], results["pipeline"], results["stages"]
    ratio = cold["wall_s"] / bare["wall_s"]
    accuracy = results["pipeline_accuracy"]
    bare_acc = [a for a in bare["accuracies"] if a is not None]
    worst_stage = max(stages, key=lambda s: stages[s]["peak_rss"])
    noop = results["noop"]["wall_s"]
    same = results["pipeline_same_model_bytes"]
    rows = [
        ("cold dvc repro / bare wall", f"<= {TARGET_RATIO:.2f}x", f"{ratio:.2f}x", ratio <= TARGET_RATIO),
        ("pipeline test accuracy, seed 42", f">= {TARGET_ACCURACY}", f"{accuracy:.4f}", accuracy >= TARGET_ACCURACY),
        (
            "  ... vs the seed script's runs",
            ">= its lowest run",
            f"{min(bare_acc):.4f}..{max(bare_acc):.4f}, median {statistics.median(bare_acc):.4f}",
            accuracy >= min(bare_acc),
        ),
        ("no-op dvc repro", f"<= {TARGET_NOOP_S:.0f} s", f"{noop:.2f} s", noop <= TARGET_NOOP_S),
        (
            "peak RSS, every stage",
            "<= 1024 MiB",
            f"{stages[worst_stage]['peak_rss'] / MIB:.0f} MiB ({worst_stage})",
            stages[worst_stage]["peak_rss"] <= TARGET_PEAK_BYTES,
        ),
        (
            "validate 70,000 raw + processed",
            f"<= {TARGET_VALIDATION_S:.0f} s",
            f"{results['validation']['total_s']:.2f} s",
            results["validation"]["total_s"] <= TARGET_VALIDATION_S,
        ),
        (
            "same model bytes every cold run",
            "yes",
            "yes" if same else "no",
            same,
        ),
    ]
    return rows


def fmt_row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    lines = [fmt_row(headers, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt_row([str(c) for c in row], widths) for row in rows]
    return "\n".join(lines)


def _cells(label: str, wall: float, cpu: float | None = None, peak: int | None = None, ratio: str = "") -> list[str]:
    digits = 2 if wall < 10 else 1
    cpu_s = "" if cpu is None else f"{cpu:.1f}"
    peak_s = "" if peak is None else f"{peak / MIB:.0f}"
    return [label, f"{wall:.{digits}f}", cpu_s, peak_s, ratio]


def report(results: dict) -> str:
    bare, cold, stages = results["bare"], results["pipeline"], results["stages"]
    n = len(bare["walls_s"])
    top_stage = max(s["peak_rss"] for s in stages.values())
    measured = [
        _cells("bare seed script", bare["wall_s"], bare["cpu_s"], bare["peak_rss"], "1.00"),
        _cells(
            "cold dvc repro, 5 stages",
            cold["wall_s"],
            cold["cpu_s"],
            top_stage,
            f"{cold['wall_s'] / bare['wall_s']:.2f}",
        ),
    ]
    measured[-1][3] += " (max stage)"
    for name, s in stages.items():
        label = f"  stage {name}" + (" (loads TensorFlow)" if s["tensorflow"] else "")
        measured.append(_cells(label, s["wall_s"], s["cpu_s"], s["peak_rss"]))
    measured.append(_cells("no-op dvc repro", results["noop"]["wall_s"], results["noop"]["cpu_s"]))
    labels = {"flow_ephemeral": "Prefect flow, all skipped, ephemeral", "flow_server": "  ... with a local server"}
    for key, label in labels.items():
        if key in results:
            measured.append(_cells(label, results[key]["wall_s"], results[key]["cpu_s"], results[key]["peak_rss"]))
    v = results["validation"]
    measured.append(_cells("raw schema, 70,000 images", v["raw_s"]))
    measured.append(_cells("processed schema, 70,000 images", v["processed_s"]))
    same = "the same model bytes every run" if results["pipeline_same_model_bytes"] else "DIFFERENT model bytes"
    accuracy = [
        ["bare seed script (unseeded)", " ".join(f"{a:.4f}" for a in bare["accuracies"])],
        [f"pipeline, reports/metrics.json ({same})", " ".join(f"{a:.4f}" for a in cold["accuracies"])],
    ]
    target_rows = [[name, want, got, "PASS" if ok else "FAIL"] for name, want, got, ok in targets(results)]
    parts = [
        f"Commit {results['commit']}. Medians of {n} runs each; peak RSS is the largest over the runs.",
        results["machine"],
        "",
        table(["run", "wall s", "CPU s", "peak RSS MiB", "vs bare"], measured),
        "",
        table(["test accuracy", "per run"], accuracy),
        "",
        table(["target", "wanted", "measured", "result"], target_rows),
    ]
    return "\n".join(parts)


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load[0]:.2f} {load[1]:.2f}."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of the bare script and the cold pipeline")
    parser.add_argument("--noop-repeats", type=int, default=5, help="no-op dvc repro runs")
    parser.add_argument("--flow-repeats", type=int, default=3, help="skipped Prefect flow runs per server kind")
    parser.add_argument("--no-prefect", action="store_true", help="skip the Prefect flow timings")
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("MNIST_MIRROR", "/work/shared/data/mnist")))
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--project", type=Path, default=ROOT, help="git checkout to measure (default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args(argv)

    results: dict = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "repeats": args.repeats}
    tmp = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    try:
        workspace = make_workspace(args.project.resolve(), tmp / "project")
        shim_dir = tmp / "bin"
        write_shim(shim_dir)
        env = base_env(workspace, shim_dir, args.mirror.resolve(), tmp / "prefect-home")
        results["commit"] = describe_commit(args.project.resolve())
        say(f"measuring {args.project.resolve()} at {results['commit']} in {workspace}; {machine()}")

        bare_runs, cold_runs = [], []
        for i in range(1, args.repeats + 1):
            say(f"run {i}/{args.repeats}: bare seed script ...")
            bare_runs.append(run_bare(workspace, env, args.mirror.resolve()))
            b = bare_runs[-1]
            say(f"  bare {b.wall:.1f}s wall, {b.cpu:.1f}s CPU, {b.peak_rss / MIB:.0f} MiB, accuracy {b.accuracy}")
            say(f"run {i}/{args.repeats}: cold dvc repro ...")
            cold_runs.append(run_cold_pipeline(workspace, env))
            c = cold_runs[-1]
            per_stage = ", ".join(f"{s['stage']} {s['wall']:.1f}s/{s['peak_rss'] / MIB:.0f}MiB" for s in c.stages)
            say(f"  pipeline {c.wall:.1f}s wall, {c.cpu:.1f}s CPU, accuracy {c.accuracy}; {per_stage}")
        results["bare"] = summarize(bare_runs)
        results["pipeline"] = summarize(cold_runs)
        results["stages"] = stage_summary(cold_runs)
        results["pipeline_accuracy"] = cold_runs[-1].accuracy
        results["pipeline_same_model_bytes"] = len({r.model_md5 for r in cold_runs}) == 1

        say(f"no-op dvc repro x{args.noop_repeats} ...")
        results["noop"] = summarize([run_noop(workspace, env) for _ in range(args.noop_repeats)])

        if not args.no_prefect:
            say(f"Prefect flow, every stage skipped, ephemeral server x{args.flow_repeats} ...")
            results["flow_ephemeral"] = summarize([run_flow(workspace, env) for _ in range(args.flow_repeats)])
            say("starting a local prefect server ...")
            server_env = {**env, "PREFECT_HOME": os.fspath(tmp / "prefect-server-home")}
            with prefect_server(server_env, tmp / "prefect-server.log") as (api, startup):
                say(f"  server healthy after {startup:.1f}s at {api}; flow x{args.flow_repeats} ...")
                flow_env = {**server_env, "PREFECT_API_URL": api}
                results["flow_server"] = summarize([run_flow(workspace, flow_env) for _ in range(args.flow_repeats)])
                results["flow_server"]["server_startup_s"] = startup

        say("timing both schemas over all 70,000 images ...")
        results["validation"] = time_validation(workspace)
        results["machine"] = machine()
        results["targets"] = [
            {"target": name, "wanted": want, "measured": got, "pass": ok} for name, want, got, ok in targets(results)
        ]
        text = report(results)
        print("\n" + text, flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            runs = {"bare_runs": [asdict(r) | {"output": ""} for r in bare_runs]}
            runs["pipeline_runs"] = [asdict(r) for r in cold_runs]
            args.json.write_text(json.dumps({**results, **runs, "table": text}, indent=2) + "\n")
            say(f"wrote {args.json}")
        return 0 if all(row["pass"] for row in results["targets"]) else 1
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
