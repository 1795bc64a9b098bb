"""`mnist-pipeline`: run the flow, serve it on a schedule, audit lineage.

Heavy imports (Prefect, TensorFlow) happen inside the subcommand that needs them, so
`mnist-pipeline lineage ...` answers quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.pipeline import mnist_pipeline
    from flows.workspace import parse_assignments

    overrides = parse_assignments(args.set)
    state = mnist_pipeline(root=os.fspath(args.root), overrides=overrides, return_state=True)
    if not state.is_completed():
        print(f"pipeline {state.name}: {state.message}", file=sys.stderr)
        return 1
    summary = state.result()
    print(f"pipeline completed; stages run: {', '.join(summary['stages_run']) or 'none'}; metrics {summary['metrics']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the Prefect flow once, locally (with or without a Prefect server)")
    run.add_argument("--root", type=Path, default=Path("."), help="project folder holding dvc.yaml (default: .)")
    run.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting in params.yaml"
    )
    run.set_defaults(func=_run)

    try:
        from tasks.lineage_cli import add_lineage_parser
    except ImportError:  # pragma: no cover - lineage commands not installed
        pass
    else:
        add_lineage_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"mnist-pipeline: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
