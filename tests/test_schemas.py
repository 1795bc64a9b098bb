"""The pandera (xarray backend) schemas: every check fails on its own bad input, naming what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.schemas import Failure, check_array, processed_images, raw_images, raw_labels


def only(failures: list[Failure], check: str) -> Failure:
    matching = [f for f in failures if f.check == check]
    assert len(matching) == 1, failures
    return matching[0]


# ---------------------------------------------------------------- raw schema


def test_sound_raw_arrays_pass(arrays):
    assert check_array(raw_images(50), "x_train", arrays["x_train"]) == []
    assert check_array(raw_labels(50), "y_train", arrays["y_train"]) == []
    assert check_array(raw_images(20), "x_test", arrays["x_test"]) == []
    assert check_array(raw_labels(20), "y_test", arrays["y_test"]) == []


def test_raw_images_wrong_dtype_and_pixel_range():
    images = np.zeros((4, 28, 28), dtype=np.int16)
    images[1, 0, 0], images[3, 5, 5], images[3, 6, 6] = 300, -1, 256
    failures = check_array(raw_images(4), "x_train", images)
    dtype = only(failures, "dtype(<class 'numpy.uint8'>)")
    assert "expected dtype <class 'numpy.uint8'>, got int16" in dtype.message
    pixels = only(failures, "pixel_range")
    assert (pixels.count, pixels.samples) == (3, (1, 3))
    assert str(pixels).startswith("x_train: check 'pixel_range' failed in 3 value(s); first failing samples [1, 3]")
    assert "pixels must be in 0..255" in str(pixels)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((4, 27, 28), "expected size row=28, got 27"),
        ((4, 28, 29), "expected size col=28, got 29"),
        ((5, 28, 28), "expected size sample=4, got 5"),
    ],
)
def test_raw_images_wrong_sizes(shape, expected):
    failures = check_array(raw_images(4), "x_test", np.zeros(shape, np.uint8))
    assert only(failures, "sizes").message == expected
    assert str(failures[0]).startswith("x_test: check 'sizes' failed")


@pytest.mark.parametrize("shape", [(4, 784), (4, 28, 28, 1), (4,)])
def test_raw_images_wrong_number_of_dims(shape):
    failures = check_array(raw_images(4), "x_train", np.zeros(shape, np.uint8))
    assert failures == [
        Failure("x_train", "dims", f"expected 3 dims ('sample', 'row', 'col'), got shape {shape}"),
    ]


def test_labels_out_of_range_are_counted_and_located():
    labels = np.tile(np.arange(10, dtype=np.uint8), 3)
    labels[[4, 17, 25]] = [10, 255, 11]
    failure = only(check_array(raw_labels(30), "y_train", labels), "label_range")
    assert (failure.count, failure.samples) == (3, (4, 17, 25))
    assert "labels must be in 0..9" in failure.message
    assert "10" in failure.message and "255" in failure.message


def test_failing_sample_indices_are_capped():
    labels = np.full(40, 42, dtype=np.uint8)
    labels[:10] = np.arange(10)
    failure = only(check_array(raw_labels(40), "y_test", labels, max_indices=5), "label_range")
    assert (failure.count, failure.samples) == (30, (10, 11, 12, 13, 14))


def test_missing_class_is_named():
    labels = np.array([0, 1, 2, 4, 5, 6, 8, 9, 9, 0], dtype=np.uint8)
    failures = check_array(raw_labels(10), "y_test", labels)
    assert failures == [Failure("y_test", "all_classes_present", "missing classes [3, 7]")]
    assert str(failures[0]) == "y_test: check 'all_classes_present' failed: missing classes [3, 7]"


def test_labels_wrong_dtype_and_size():
    labels = np.arange(12, dtype=np.int64) % 10
    failures = check_array(raw_labels(10), "y_train", labels)
    assert {f.check for f in failures} == {"dtype(<class 'numpy.uint8'>)", "sizes"}
    assert only(failures, "sizes").message == "expected size sample=10, got 12"


def test_labels_wrong_number_of_dims():
    failures = check_array(raw_labels(10), "y_train", np.zeros((10, 1), np.uint8))
    assert [f.check for f in failures] == ["dims"]


# ---------------------------------------------------------------- processed schema


def test_sound_processed_images_pass(processed):
    assert check_array(processed_images(50), "x_train", processed["x_train"]) == []


def test_processed_values_outside_unit_range():
    images = np.zeros((5, 28, 28, 1), np.float32)
    images[2, 3, 3, 0], images[4, 0, 0, 0] = 1.0001, -0.5
    failure = only(check_array(processed_images(5), "x_test", images), "unit_range")
    assert (failure.count, failure.samples) == (2, (2, 4))
    assert "values must be in [0, 1]" in failure.message


def test_processed_infinities():
    images = np.zeros((3, 28, 28, 1), np.float32)
    images[1, 0, 0, 0] = np.inf
    failures = check_array(processed_images(3), "x_test", images)
    finite = only(failures, "finite")
    assert (finite.count, finite.samples) == (1, (1,))
    assert only(failures, "unit_range").samples == (1,)


def test_processed_nan_is_counted_and_located():
    images = np.zeros((4, 28, 28, 1), np.float32)
    images[1, 2, 3, 0] = images[3, 0, 0, 0] = images[3, 1, 0, 0] = np.nan
    failure = only(check_array(processed_images(4), "x_train", images), "nullable")
    assert (failure.count, failure.samples) == (3, (1, 3))
    assert "first failing samples [1, 3]" in str(failure)


def test_processed_wrong_dtype():
    failures = check_array(processed_images(2), "x_train", np.zeros((2, 28, 28, 1), np.float64))
    assert [f.check for f in failures] == ["dtype(<class 'numpy.float32'>)"]
    assert "got float64" in failures[0].message


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((2, 28, 28, 3), "expected size channel=1, got 3"), ((3, 28, 28, 1), "expected size sample=2, got 3")],
)
def test_processed_wrong_sizes(shape, expected):
    assert only(check_array(processed_images(2), "x", np.zeros(shape, np.float32)), "sizes").message == expected


def test_processed_missing_channel_axis():
    failures = check_array(processed_images(2), "x_train", np.zeros((2, 28, 28), np.float32))
    assert [f.check for f in failures] == ["dims"]
    assert "got shape (2, 28, 28)" in failures[0].message
