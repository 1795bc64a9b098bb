"""Stage logic of the MNIST pipeline: one module per stage, each runnable as `python -m tasks.<stage>`."""
