"""train: the seed's network (or a small CNN), trained reproducibly to the byte."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from tasks.config import Params, TrainParams
from tasks.io import atomic_path, load_arrays, write_text
from tasks.modelio import save_model
from tasks.stage import StageError, run_stage

PROCESSED_DIR = Path("data/processed")
MODEL = Path("models/model.keras")
TRAINING_LOG = Path("reports/training.csv")
NUM_CLASSES = 10


def seed_everything(seed: int) -> None:
    """Same seed, same data, same code, same machine: the same weights, and the same bytes.

    clear_session resets Keras's layer-name counters: otherwise a second training in the same
    process names its layers dense_2, adam_1... and saves a different file.
    """
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(kind: str, hidden_units: int = 128, dropout: float = 0.2, input_shape=(28, 28, 1)):
    """mlp is the seed's network exactly; cnn is a small convnet for >99.2% test accuracy."""
    from keras import Input, Sequential, layers

    if kind == "mlp":
        body = [
            layers.Flatten(),
            layers.Dense(hidden_units, activation="relu"),
            layers.Dropout(dropout),
        ]
    elif kind == "cnn":
        body = [
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(dropout),
            layers.Dense(hidden_units, activation="relu"),
            layers.Dropout(dropout),
        ]
    else:
        raise StageError(f"train.model must be 'mlp' or 'cnn', got {kind!r}")
    return Sequential([Input(shape=input_shape), *body, layers.Dense(NUM_CLASSES)], name=kind)


def compile_model(model, learning_rate: float, steps_per_execution: int = 1):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=False,
    )
    return model


class EpochLog:
    """Collects each epoch's metrics for `dvc plots` (no timings: the file stays reproducible)."""

    def __new__(cls):
        import keras

        class _Log(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.rows: list[dict[str, float]] = []
                self._start = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
                self.rows.append(row)
                print(f"[train] epoch {epoch + 1}: {time.perf_counter() - self._start:.1f}s", flush=True)

        return _Log()


def training_csv(rows: list[dict[str, float]]) -> str:
    if not rows:
        return "epoch,loss,accuracy\n"
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(f"{r[k]:.6g}" if k != "epoch" else str(r[k]) for k in keys) for r in rows]
    return "\n".join(lines) + "\n"


def limit_op_threads(kind: str) -> None:
    """One thread per op for the mlp: its ops are tiny (a 32x784 by 784x128 matmul per step), so
    splitting each over the cores costs more in hand-offs than it saves. On 2 cores an epoch
    runs about 30% faster, and the model comes out the same to the byte. TensorFlow only takes
    this before it starts; a process that already ran TensorFlow keeps its setting.
    """
    if kind != "mlp":
        return
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)


def shared_tensor(x: np.ndarray):
    """x as a tensor over its own memory (DLPack), or x itself when its memory cannot be shared.

    Keras copies a NumPy array into a tensor, with a second copy on the way; at MNIST's 188 MB of
    float32 that alone lifts the train stage above 1 GiB. A writable, C-ordered, 64-byte aligned
    array (such as a copy-on-write map of a .npy file) is handed over as it is instead.
    """
    import tensorflow as tf

    if not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.flags.writeable and x.ctypes.data % 64 == 0):
        return x
    return tf.experimental.dlpack.from_dlpack(x.__dlpack__())


def train_model(x: np.ndarray, y: np.ndarray, p: TrainParams, verbose: int = 2):
    """Seed, build, compile and fit; return the model and its per-epoch metrics."""
    if p.batch_size > len(x):
        raise StageError(f"train.batch_size {p.batch_size} is larger than the {len(x)} training samples")
    limit_op_threads(p.model)
    seed_everything(p.seed)
    model = build_model(p.model, p.hidden_units, p.dropout, input_shape=tuple(x.shape[1:]))
    compile_model(model, p.learning_rate, p.steps_per_execution)
    log = EpochLog()
    model.fit(
        shared_tensor(x), y, epochs=p.epochs, batch_size=p.batch_size, shuffle=True, verbose=verbose, callbacks=[log]
    )
    return model, log.rows


def load_training_data() -> tuple[np.ndarray, np.ndarray]:
    data = load_arrays(PROCESSED_DIR, ("x_train", "y_train"))  # present, plain .npy, no pickle
    # The same file mapped copy-on-write: writable, so TensorFlow can share it; nothing is ever written back.
    return np.load(PROCESSED_DIR / "x_train.npy", mmap_mode="c", allow_pickle=False), data["y_train"]


def train(params: Params) -> None:
    x, y = load_training_data()
    p = params.train
    print(f"[train] {p.model}: {p.epochs} epochs, batch {p.batch_size}, {len(x)} samples", flush=True)
    verbose = 1 if sys.stdout.isatty() else 2
    model, rows = train_model(x, y, p, verbose=verbose)
    with atomic_path(TRAINING_LOG) as staged:  # staged first, renamed last: both outputs change, or neither
        write_text(staged, training_csv(rows))
        save_model(model, MODEL)
    print(f"[train] wrote {MODEL}; final loss {rows[-1]['loss']:.4f} accuracy {rows[-1]['accuracy']:.4f}")


def main() -> int:
    return run_stage("train", train)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skips TensorFlow's interpreter teardown (~1 s); every output is already in place
