"""evaluate: test loss and accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import io
import json
import sys
import zipfile
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
SEED_MLP = ("InputLayer", "Flatten", "Dense", "Dropout", "Dense")
ACTIVATIONS = {"relu": lambda h: np.maximum(h, 0, out=h), "linear": lambda h: h}


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


def _plain_dense(layer: dict) -> bool:
    c = layer["config"]
    plain = c.get("use_bias") is True and c.get("quantization_config") is None and c.get("activation") in ACTIVATIONS
    return plain and c.get("dtype", {}).get("config", {}).get("name") == "float32"


def _seed_mlp_dense(config: dict, input_shape: tuple[int, ...]) -> list[dict] | None:
    """The two Dense layers' configs if config is exactly the seed's network built for input_shape."""
    layers = config["config"]["layers"]
    if (config.get("module"), config.get("class_name")) != ("keras", "Sequential"):
        return None
    if tuple(layer["class_name"] for layer in layers) != SEED_MLP:
        return None
    if any(layer.get("module") != "keras.layers" or layer.get("registered_name") for layer in layers):
        return None
    if tuple(layers[0]["config"]["batch_shape"][1:]) != input_shape:
        return None
    if layers[1]["config"].get("data_format") != "channels_last" or not all(map(_plain_dense, layers[2::2])):
        return None
    return layers[2::2]


def mlp_layers(path: Path, input_shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray, str]] | None:
    """The Dense layers (kernel, bias, activation) of a saved seed mlp, read without Keras.

    Only a file holding exactly the seed's network (Flatten, Dense, Dropout, Dense: plain float32
    layers of Keras's own) built for input_shape qualifies; for anything else, or anything
    unreadable, this returns None and Keras loads the file, with its own checks and messages.
    Nothing in the file is run: its layer list is matched against a fixed one, its weights are arrays.
    """
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5")
        if (layers := _seed_mlp_dense(config, input_shape)) is None:
            return None
        with h5py.File(io.BytesIO(weights), "r") as h5:
            groups = [h5[f"layers/{layer['config']['name']}/vars"] for layer in layers]
            dense = [(np.asarray(g["0"], np.float32), np.asarray(g["1"], np.float32)) for g in groups]
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, zipfile.BadZipFile):
        return None
    width = int(np.prod(input_shape))
    for kernel, bias in dense:
        if kernel.ndim != 2 or kernel.shape[0] != width or bias.shape != (kernel.shape[1],):
            return None
        width = kernel.shape[1]
    return [(k, b, layer["config"]["activation"]) for (k, b), layer in zip(dense, layers, strict=True)]


def mlp_logits(dense: list[tuple[np.ndarray, np.ndarray, str]], x: np.ndarray, batch_size: int) -> np.ndarray:
    """The seed mlp's inference pass in float32 NumPy: flatten, then x @ kernel + bias and the
    activation per Dense layer; Dropout passes inputs through unchanged at inference."""
    out = np.empty((len(x), dense[-1][0].shape[1]), np.float32)
    for start in range(0, len(x), batch_size):
        h = np.asarray(x[start : start + batch_size], np.float32)
        h = h.reshape(len(h), -1)
        for kernel, bias, activation in dense:
            h = ACTIVATIONS[activation](h @ kernel + bias)
        out[start : start + len(h)] = h
    return out


def predict_logits(x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of the test images. The seed's mlp is run in NumPy: importing TensorFlow alone takes
    longer (~3 s) than the rest of this stage; its metrics come out the same as with Keras
    (logits agree to ~1e-5). Any other model is loaded and run by Keras."""
    dense = mlp_layers(MODEL, tuple(x.shape[1:]))
    if dense is not None:
        return mlp_logits(dense, x, batch_size)
    model = load_model(MODEL, input_shape=tuple(x.shape[1:]))
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def evaluate(params: Params) -> dict:
    data = load_arrays(PROCESSED_DIR, ("x_test", "y_test"))
    x, y = data["x_test"], np.asarray(data["y_test"])
    logits = predict_logits(x, params.evaluate.batch_size)
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
