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
    from flows.workspace import overridden_params, parse_assignments

    overrides = parse_assignments(args.set)
    overridden_params(args.root, overrides)  # a bad setting stops here: before Prefect starts, nothing written

    from flows.pipeline import mnist_pipeline

    state = mnist_pipeline(
        root=os.fspath(args.root), overrides=overrides, pull=args.pull, push=args.push, return_state=True
    )
    if not state.is_completed():
        print(f"pipeline {state.name}: {state.message}", file=sys.stderr)
        return 1
    summary = state.result()
    print(f"pipeline completed; stages run: {', '.join(summary['stages_run']) or 'none'}; metrics {summary['metrics']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.deploy import check_api_url, serve

    url = check_api_url()
    print(f"serving the pipeline on {args.root.resolve()} against {url}; cron {args.cron!r} ({args.timezone})")
    serve(
        args.root, cron=args.cron, timezone=args.timezone, name=args.name, collision=args.collision, paused=args.paused
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the Prefect flow once, locally (with or without a Prefect server)")
    run.add_argument("--root", type=Path, default=Path("."), help="project folder holding dvc.yaml (default: .)")
    run.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting in params.yaml"
    )
    run.add_argument("--pull", action="store_true", help="`dvc pull` from the DVC remote before the stages")
    run.add_argument("--push", action="store_true", help="`dvc push` to the DVC remote after the stages")
    run.set_defaults(func=_run)

    from flows.deploy import COLLISION_STRATEGIES, DEFAULT_COLLISION, DEFAULT_CRON, DEFAULT_TIMEZONE, DEPLOYMENT_NAME

    serve = sub.add_parser(
        "serve",
        help="create the scheduled deployment and run its flow runs (needs a Prefect server: PREFECT_API_URL)",
    )
    serve.add_argument("--root", type=Path, default=Path("."), help="project folder holding dvc.yaml (default: .)")
    serve.add_argument("--cron", default=DEFAULT_CRON, help=f"when to run (default: {DEFAULT_CRON!r}, nightly)")
    serve.add_argument("--timezone", default=DEFAULT_TIMEZONE, help=f"cron timezone (default: {DEFAULT_TIMEZONE})")
    serve.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default: {DEPLOYMENT_NAME})")
    serve.add_argument(
        "--collision",
        choices=COLLISION_STRATEGIES,
        default=DEFAULT_COLLISION,
        help=f"what happens to a run that starts while one is running (default: {DEFAULT_COLLISION}: it waits)",
    )
    serve.add_argument("--paused", action="store_true", help="create the schedule paused (runs only when triggered)")
    serve.set_defaults(func=_serve)

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
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"mnist-pipeline: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
