"""Test accuracy of the pipeline's default model over several seeds, on a workspace's processed data.

The seed script sets no seed, so its accuracy varies from run to run; the pipeline's default
seed (42) is one draw. This trains the default model (params.yaml's train section, only the seed
changed) once per seed with the train stage's own code and prints each test accuracy, so the two
spreads can be compared. Run it from a project folder that holds data/processed (after `dvc repro`):

    python bench/accuracy_seeds.py 42 0 1 2 3 4 5 6
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.getcwd())
    from tasks.config import load_params
    from tasks.evaluate import compute_metrics
    from tasks.train import load_training_data, train_model

    seeds = [int(s) for s in argv] or [42, 0, 1, 2, 3, 4]
    params = load_params().train
    x, y = load_training_data()
    x_test, y_test = (np.load(Path("data/processed") / f"{n}.npy") for n in ("x_test", "y_test"))
    accuracies = []
    for seed in seeds:
        model, _ = train_model(x, y, params.model_copy(update={"seed": seed}), verbose=0)
        logits = np.asarray(model.predict(x_test, batch_size=1000, verbose=0))
        accuracies.append(compute_metrics(logits, y_test)[0]["test_accuracy"])
        print(f"seed {seed}: test accuracy {accuracies[-1]:.4f}", flush=True)
    print(f"min {min(accuracies):.4f}  median {statistics.median(accuracies):.4f}  max {max(accuracies):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
