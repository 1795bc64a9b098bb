"""The model card: what the model is, what it learnt from, how well it does, and where it came from.

Rendered in Markdown from a lineage record and the full metrics (per-class scores), by evaluate
after every run and on demand by `mnist-pipeline lineage card`.
"""

from __future__ import annotations

import yaml


def describe_architecture(train: dict) -> str:
    """The network build_model makes for these train params, in one line."""
    units, drop = train.get("hidden_units", 128), train.get("dropout", 0.2)
    if train.get("model", "mlp") == "cnn":
        body = (
            f"Conv2D(32, 3×3, relu) → MaxPool(2) → Conv2D(64, 3×3, relu) → MaxPool(2) → Flatten → "
            f"Dropout({drop}) → Dense({units}, relu) → Dropout({drop})"
        )
    else:
        body = f"Flatten → Dense({units}, relu) → Dropout({drop})"
    return f"Input(28, 28, 1) → {body} → Dense(10) logits"


def format_samples(samples: dict | None) -> str:
    return ", ".join(f"{split} {n}" for split, n in (samples or {}).items()) or "unknown"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _num(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _model_section(record: dict) -> list[str]:
    train = record.get("params", {}).get("train", {})
    scale = record.get("params", {}).get("preprocess", {}).get("scale", 255.0)
    return [
        "## What it is",
        "",
        f"A Keras 3 `{train.get('model', 'mlp')}` classifier of 28×28 grey-scale handwritten digits.",
        "",
        f"- Network: {describe_architecture(train)}; the predicted digit is the argmax of the 10 logits.",
        f"- Input: float32 pixels divided by {scale} (values in [0, 1]), shape (28, 28, 1).",
        f"- Training: Adam (learning rate {train.get('learning_rate')}), sparse categorical cross-entropy on "
        f"logits, {train.get('epochs')} epoch(s), batch {train.get('batch_size')}, seed {train.get('seed')}, "
        "deterministic ops: the same data, params and code give the same file, byte for byte.",
        "- Intended use: a baseline and a teaching example for MNIST-like, centred digits; "
        "it has not been tested on other handwriting, scans or photographs.",
        "",
    ]


def _data_section(record: dict) -> list[str]:
    source, val = record.get("source", {}), record.get("validation") or {}
    pinned = record.get("params", {}).get("ingest", {}).get("digests", {})
    lines = ["## Data", "", f"- Source: {source.get('kind')} `{source.get('location')}`"]
    lines += [f"  - `{where}` sha256 `{digest}`" for where, digest in source.get("files", {}).items()]
    lines += [
        f"- Raw data `data/raw` md5 `{record.get('data_md5', {}).get('raw')}`; "
        f"processed `data/processed` md5 `{record.get('data_md5', {}).get('processed')}`",
        f"- Validation: schema version {record.get('schema_version')}, "
        f"{'passed' if val.get('passed') else 'NOT passed'}; samples: {format_samples(val.get('samples'))}",
        "",
    ]
    rows = [
        [f"`{n}`", f"`{d}`", "yes" if pinned.get(n) == d else "NO"] for n, d in record.get("raw_arrays", {}).items()
    ]
    lines += [*_table(["array", "sha256", "matches pinned"], rows), ""]
    counts = val.get("class_counts") or {}
    if counts:
        classes = sorted(next(iter(counts.values())), key=int)
        lines += _table(["split", *classes], [[s, *(c.get(k) for k in classes)] for s, c in counts.items()])
        lines.append("")
    return lines


def _metrics_section(metrics: dict) -> list[str]:
    lines = [
        f"## Metrics (test set, {metrics.get('test_samples')} samples)",
        "",
        f"accuracy **{_num(metrics.get('test_accuracy'))}**, loss {_num(metrics.get('test_loss'))}, "
        f"macro F1 {_num(metrics.get('macro_f1'))}",
        "",
    ]
    per_class = metrics.get("per_class") or {}
    rows = [[c, _num(s["precision"]), _num(s["recall"]), _num(s["f1"]), s["support"]] for c, s in per_class.items()]
    return [*lines, *_table(["class", "precision", "recall", "F1", "support"], rows), ""] if rows else lines


def _lineage_section(record: dict) -> list[str]:
    git = record.get("git", {})
    changed = ", ".join(f"`{p}`" for p in git.get("changed", []))
    state = {None: "unknown", False: "clean"}.get(git.get("dirty"), f"uncommitted changes: {changed}")
    rows = [[f"`{p}`", a.get("stage"), f"`{a.get('md5')}`"] for p, a in record.get("artifacts", {}).items()]
    return [
        "## Lineage",
        "",
        f"- Run: {record.get('trigger')} (run id {record.get('run_id') or '-'}) at {record.get('time')}, "
        f"stages run: {', '.join(record.get('stages_run', [])) or 'none'}",
        f"- Code: git commit `{git.get('commit')}` ({state})",
        "",
        *_table(["artifact", "stage", "md5"], rows),
        "",
        "Params:",
        "",
        "```yaml",
        yaml.safe_dump(record.get("params", {}), sort_keys=False).rstrip(),
        "```",
        "",
        "Check it: `mnist-pipeline lineage verify`; trace any copy: `mnist-pipeline lineage trace PATH`.",
    ]


def render_card(record: dict, metrics: dict) -> str:
    """The whole card; `metrics` is reports/metrics.json (with per-class scores)."""
    head = [
        "# Model card: MNIST digit classifier",
        "",
        f"`models/model.keras` md5 `{record.get('model_md5')}`, recorded {record.get('time')}.",
        "",
    ]
    return (
        "\n".join(
            head + _model_section(record) + _data_section(record) + _metrics_section(metrics) + _lineage_section(record)
        )
        + "\n"
    )
