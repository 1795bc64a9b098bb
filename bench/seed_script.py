"""The seed article's steps as one bare Keras script: no orchestration, no checks, no files written.

`mnist.load_data()` downloads mnist.npz, which an offline machine cannot do, so the four IDX
files of a mirror folder are read instead (the same arrays, the same dtypes); everything after
loading is the article's code. Usage: python bench/seed_script.py [MIRROR_FOLDER]
(default: $MNIST_MIRROR).
"""

import gzip
import os
import sys

import numpy as np
import tensorflow as tf
from keras.layers import Dense, Dropout, Flatten
from keras.models import Sequential


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data(folder):
    """Stands in for keras.datasets.mnist.load_data(): ((x_train, y_train), (x_test, y_test))."""
    files = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    x_train, y_train, x_test, y_test = (load_idx(os.path.join(folder, f"{name}.gz")) for name in files)
    return (x_train, y_train), (x_test, y_test)


folder = sys.argv[1] if len(sys.argv) > 1 else os.environ["MNIST_MIRROR"]

# Step 2: the data
(x_train, y_train), (x_test, y_test) = load_data(folder)

# Step 3: preprocess
x_train = x_train.reshape(x_train.shape[0], 28, 28, 1)
x_test = x_test.reshape(x_test.shape[0], 28, 28, 1)
input_shape = (28, 28, 1)
x_train = x_train.astype("float32")
x_test = x_test.astype("float32")
x_train /= 255
x_test /= 255

# Step 4: the model
model = Sequential()
model.add(Flatten(input_shape=input_shape))
model.add(Dense(128, activation="relu"))
model.add(Dropout(0.2))
model.add(Dense(10))

# Step 5: compile
model.compile(
    optimizer="adam",
    loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)

# Step 6: train
model.fit(x_train, y_train, epochs=5, verbose=2)

# Step 7: evaluate
loss, accuracy = model.evaluate(x_test, y_test, verbose=2)
print(f"test accuracy {accuracy:.4f}", flush=True)
