"""What each flow run leaves in Prefect: a metrics table and a lineage summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

METRICS = Path("reports/metrics.json")


def metrics_rows(metrics: dict) -> list[dict[str, Any]]:
    """One row per class plus an 'all' row with the overall figures."""
    rows = [
        {
            "class": "all",
            "accuracy": metrics.get("test_accuracy"),
            "loss": metrics.get("test_loss"),
            "f1": metrics.get("macro_f1"),
            "support": metrics.get("test_samples"),
        }
    ]
    for cls, scores in metrics.get("per_class", {}).items():
        rows.append({"class": cls, "precision": scores["precision"], "recall": scores["recall"], **scores})
    return rows


def flatten(record: dict, prefix: str = "") -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "per_class":
            items += flatten(value, f"{name}.")
        elif key != "per_class":
            items.append((name, json.dumps(value) if isinstance(value, list) else str(value)))
    return items


def lineage_markdown(record: dict, ran: list[str], overrides: dict) -> str:
    lines = [
        "# MNIST pipeline run",
        "",
        f"Stages run: {', '.join(ran) or 'none (everything up to date)'}",
        f"Overrides: {json.dumps(overrides) if overrides else 'none'}",
        "",
        "| field | value |",
        "| --- | --- |",
    ]
    lines += [f"| {key} | `{value}` |" for key, value in flatten(record)]
    return "\n".join(lines) + "\n"


def publish_artifacts(root: Path, ran: list[str], overrides: dict, trigger: str, run_id: str) -> dict:
    """Record the run (evaluate already did if it ran) and attach both artifacts to the flow run."""
    from tasks.lineage import current_lineage, record_run

    record = current_lineage(root) if "evaluate" in ran else record_run(root, trigger, run_id or None, ran)
    metrics_path = root / METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    create_table_artifact(key="mnist-metrics", table=metrics_rows(metrics), description="Test metrics of the model")
    create_markdown_artifact(key="mnist-lineage", markdown=lineage_markdown(record, ran, overrides))
    return {
        "stages_run": ran,
        "overrides": overrides,
        "metrics": {k: metrics.get(k) for k in ("test_accuracy", "test_loss")},
    }
