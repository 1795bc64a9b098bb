"""`mnist-pipeline lineage trace|verify|history|card`: tables for people, --json for tools.

flows/cli.py calls add_lineage_parser(subparsers); `python -m tasks.lineage_cli lineage ...`
works without it. Nothing here imports TensorFlow, Prefect or DVC, so each command starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tasks.lineage import CARD, current_lineage, read_json_safe
from tasks.lineage_card import format_samples
from tasks.lineage_dvc import pipeline


def find_root(start: Path | None = None) -> Path:
    """The nearest folder upwards holding dvc.yaml (the pipeline root), else the current one."""
    here = (start or Path.cwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / "dvc.yaml").is_file()), here)


def table(header: list[str], rows: list[list]) -> str:
    cells = [[str("-" if c is None else c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def short(digest: str | None, n: int = 8) -> str:
    if not digest:
        return "-"
    return digest[:n] + (".dir" if digest.endswith(".dir") else "")


def _when(time: str | None) -> str:
    return (time or "-").replace("T", " ").removesuffix("+00:00")


def _emit(args, payload, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


def _run_line(run: dict | None) -> str:
    if not run:
        return "no recorded run"
    return f"{run.get('trigger')}, run id {run.get('run_id') or '-'}, at {_when(run.get('time'))}"


def render_trace(result: dict) -> str:
    rec, d = result["lineage"] or {}, result["digests"]
    found = ", ".join(f"{m['artifact']} (stage {m['stage']})" for m in result["matches"])
    lines = [
        f"{result['path']}: md5 {d['md5']}" + (f", sha256 {d['sha256']}" if "sha256" in d else ""),
        f"  is {found}",
    ]
    lines.append(f"  made by {_run_line(result['made_by'])}; in {len(result['runs'])} recorded run(s)")
    if len(result["runs"]) > 1:
        lines.append(f"  last recorded by {_run_line(result['latest'])}")
    lines.append("")
    if not rec:
        return "\n".join([*lines, "no lineage record holds it (run log missing?): only dvc.lock knows it"])
    src, git, val = rec.get("source", {}), rec.get("git", {}), rec.get("validation") or {}
    pinned = rec.get("params", {}).get("ingest", {}).get("digests", {})
    arts, params = rec.get("artifacts", {}), rec.get("params", {})
    rows = [["source", f"{src.get('kind')} {src.get('location')}", ""]]
    rows += [["", where, f"sha256 {sha}"] for where, sha in src.get("files", {}).items()]
    rows += [
        ["raw array", n, f"sha256 {s}" + (" (pinned)" if pinned.get(n) == s else " (NOT the pinned digest)")]
        for n, s in rec.get("raw_arrays", {}).items()
    ]
    for step, path in [("raw data", "data/raw"), ("validation", "reports/validation.json"),
                       ("processed", "data/processed"), ("model", "models/model.keras"),
                       ("metrics", "reports/metrics.json")]:  # fmt: skip
        art = arts.get(path, {})
        rows.append([step, f"{path} (stage {art.get('stage')})", f"md5 {art.get('md5')}"])
        if step == "validation":
            passed = "passed" if val.get("passed") else "NOT passed"
            rows.append(
                [
                    "",
                    f"schema version {rec.get('schema_version')}, {passed}",
                    f"samples: {format_samples(val.get('samples'))}",
                ]
            )
    for section, values in params.items():
        shown = {k: v for k, v in values.items() if k not in ("digests", "url_sha256")}
        rows.append(["params", section, " ".join(f"{k}={v}" for k, v in shown.items())])
    dirty = {None: "unknown", False: "clean"}.get(git.get("dirty"), "dirty: " + ", ".join(git.get("changed", [])))
    rows.append(["code", f"git {git.get('commit')}", dirty])
    rows.append(["run", _run_line(rec), f"stages run: {', '.join(rec.get('stages_run', [])) or 'none'}"])
    m = rec.get("metrics", {})
    rows.append(["metrics", f"accuracy {m.get('test_accuracy')}", f"loss {m.get('test_loss')}"])
    latest = (result["latest"] or {}).get("metrics") or m
    if latest != m:  # evaluate changed since: the newest figures too
        rows.append(["", f"accuracy {latest.get('test_accuracy')} (latest run)", f"loss {latest.get('test_loss')}"])
    return "\n".join(lines) + table(["step", "what", "digest / detail"], rows) + "\n"


def cmd_trace(args) -> int:
    from tasks.lineage_trace import trace

    path = Path(args.path)
    if not path.exists():
        print(f"lineage trace: {path}: no such file or folder", file=sys.stderr)
        return 2
    result = trace(find_root(args.root), path)
    if not result["matches"]:
        md5 = result["digests"]["md5"]
        print(f"lineage trace: {path} (md5 {md5}) matches nothing in dvc.lock or the run log", file=sys.stderr)
        if args.json:
            _emit(args, result, "")
        return 1
    _emit(args, result, render_trace(result))
    return 0


def render_verify(result: dict) -> str:
    rows = [[a["path"], a["stage"], short(a["workspace"], 12), short(a["dvc_lock"], 12), short(a["recorded"], 12),
             a["status"]] for a in result["artifacts"]]  # fmt: skip
    lines = [table(["artifact", "stage", "workspace", "dvc.lock", "recorded", "status"], rows), ""]
    lines.append(f"recorded lineage: {result['lineage_source'] or 'none'} ({_run_line(result['recorded_run'])})")
    for kind in ("errors", "warnings"):
        if result[kind]:
            lines.append(f"{kind}:")
            lines += [f"  {f['path']}: {f['problem']}: {f['detail']}" for f in result[kind]]
    verdict = "OK" if result["ok"] else "FAILED"
    lines.append(f"verify {verdict}: {len(result['errors'])} error(s), {len(result['warnings'])} warning(s), "
                 f"{result['seconds']:.2f}s")  # fmt: skip
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from tasks.lineage_audit import verify

    result = verify(find_root(args.root))
    _emit(args, result, render_verify(result))
    return 0 if result["ok"] and not (args.strict and result["warnings"]) else 1


def _changes(diff: dict[str, list]) -> str:
    return "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items()) or ""


def cmd_history(args) -> int:
    from tasks.lineage_trace import history, trained_from

    root = find_root(args.root)
    if args.data:
        try:
            result = trained_from(root, args.data)
        except ValueError as exc:
            print(f"lineage history: {exc}", file=sys.stderr)
            return 2
        rows = [[short(m["model_md5"], 12), _when(m["first"]["time"]), m["first"]["trigger"],
                 (m["first"]["run_id"] or "-")[:8],
                 m["runs"], m["metrics"].get("test_accuracy"), m["metrics"].get("test_loss"),
                 " ".join(f"{k}={v}" for k, v in m["train"].items()), ", ".join(m["matched"])]
                for m in result["models"]]  # fmt: skip
        header = ["model md5", "first trained", "trigger", "run id", "runs", "accuracy", "loss", "train params", "via"]
        text = (
            f"models trained from data {args.data}:\n" + table(header, rows)
            if rows
            else f"no recorded model was trained from {args.data}"
        )
        _emit(args, result, text)
        return 0
    runs = history(root)
    every = set(pipeline(root))
    rows = [[i, _when(r["time"]), r["trigger"], (r["run_id"] or "-")[:8], ",".join(r["stages_run"] or []) or "none",
             "all" if set(r["stages_changed"]) == every else ",".join(r["stages_changed"]) or "none",
             short(r["data_md5"].get("raw")), short(r["data_md5"].get("processed")), short(r["model_md5"]),
             short(r["commit"], 7) + ("+" if r["dirty"] else ""), r["metrics"].get("test_accuracy"),
             r["metrics"].get("test_loss"), _changes(r["params_changed"]) if i > 1 else "(first run)"]
            for i, r in enumerate(runs, 1)]  # fmt: skip
    header = ["#", "time (UTC)", "trigger", "run id", "ran", "outputs changed", "raw", "processed", "model", "commit",
              "accuracy", "loss", "params changed"]  # fmt: skip
    _emit(args, {"runs": runs}, table(header, rows) if rows else "no runs recorded in lineage/runs.jsonl yet")
    return 0


def cmd_card(args) -> int:
    from tasks.lineage_card import render_card

    root = find_root(args.root)
    record, metrics = current_lineage(root), read_json_safe(root / "reports/metrics.json")
    markdown = render_card(record, metrics)
    if args.output:
        Path(args.output).write_text(markdown)
    _emit(args, {"markdown": markdown, "lineage": record, "metrics": metrics}, markdown.rstrip())
    return 0


def add_lineage_parser(subparsers) -> None:
    """Add `lineage` with its four subcommands; each sets func(args) -> exit code."""
    lineage = subparsers.add_parser("lineage", help="which data, params and code made a model; is it intact")
    sub = lineage.add_subparsers(dest="lineage_command", required=True, metavar="{trace,verify,history,card}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--root", type=Path, default=None, help="pipeline root (default: nearest dvc.yaml upwards)")
    p = sub.add_parser("trace", parents=[common], help="the whole chain behind a model or any artifact, by content")
    p.add_argument("path", help="a model or other artifact, also a copy outside the workspace")
    p.set_defaults(func=cmd_trace)
    p = sub.add_parser("verify", parents=[common], help="rehash every artifact; compare with dvc.lock and lineage")
    p.add_argument("--strict", action="store_true", help="fail on warnings too (stale stages, no run log)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("history", parents=[common], help="every recorded run; --data: models made from that data")
    p.add_argument("--data", metavar="DIGEST|PATH", help="list the models trained from this data version")
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("card", parents=[common], help=f"the model card in Markdown (evaluate writes {CARD})")
    p.add_argument("-o", "--output", metavar="FILE", help="also write it to FILE")
    p.set_defaults(func=cmd_card)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist-pipeline")
    add_lineage_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
