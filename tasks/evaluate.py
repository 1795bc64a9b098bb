"""evaluate: test loss and accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tasks.config import Params
from tasks.io import load_arrays, write_json, write_text
from tasks.lineage import record_evaluate
from tasks.modelio import load_model
from tasks.stage import run_stage

PROCESSED_DIR = Path("data/processed")
MODEL = Path("models/model.keras")
METRICS = Path("reports/metrics.json")
CONFUSION = Path("reports/confusion.csv")
NUM_CLASSES = 10


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy from logits, computed stably in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels.astype(np.int64)].mean())


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int = NUM_CLASSES) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(labels.astype(np.int64) * k + predicted, minlength=k * k).reshape(k, k)


def per_class_scores(matrix: np.ndarray) -> dict[str, dict[str, float]]:
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        str(c): {
            "precision": round(float(precision[c]), 6),
            "recall": round(float(recall[c]), 6),
            "f1": round(float(f1[c]), 6),
            "support": int(actual[c]),
        }
        for c in range(len(matrix))
    }


def compute_metrics(logits: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    predicted = logits.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, logits.shape[1])
    scores = per_class_scores(matrix)
    metrics = {
        "test_accuracy": round(float((predicted == labels).mean()), 6),
        "test_loss": round(cross_entropy(logits, labels), 6),
        "macro_f1": round(float(np.mean([s["f1"] for s in scores.values()])), 6),
        "test_samples": len(labels),
        "per_class": scores,
    }
    return metrics, predicted


def confusion_csv(labels: np.ndarray, predicted: np.ndarray) -> str:
    """One row per test sample, the shape DVC's confusion template reads."""
    rows = "\n".join(f"{a},{p}" for a, p in zip(labels.tolist(), predicted.tolist(), strict=True))
    return f"actual,predicted\n{rows}\n"


def summary(metrics: dict) -> str:
    m = metrics
    lines = [f"test accuracy {m['test_accuracy']:.4f}  loss {m['test_loss']:.4f}  macro F1 {m['macro_f1']:.4f}"]
    lines.append("class  precision  recall      f1  support")
    for c, s in metrics["per_class"].items():
        lines.append(f"{c:>5}  {s['precision']:9.4f}  {s['recall']:6.4f}  {s['f1']:6.4f}  {s['support']:7d}")
    return "\n".join(lines)


def evaluate(params: Params) -> dict:
    data = load_arrays(PROCESSED_DIR, ("x_test", "y_test"))
    x, y = data["x_test"], np.asarray(data["y_test"])
    model = load_model(MODEL, input_shape=tuple(x.shape[1:]))
    logits = np.asarray(model.predict(x, batch_size=params.evaluate.batch_size, verbose=0))
    metrics, predicted = compute_metrics(logits, y)
    write_json(METRICS, metrics)
    write_text(CONFUSION, confusion_csv(y, predicted))
    print(summary(metrics), flush=True)
    record = record_evaluate(Path.cwd())  # lineage/runs.jsonl, reports/lineage.json, reports/model_card.md
    print(f"[evaluate] lineage recorded: {record['trigger']} run {record['run_id'] or '-'}", flush=True)
    return metrics


def main() -> int:
    return run_stage("evaluate", evaluate)


if __name__ == "__main__":
    sys.exit(main())
