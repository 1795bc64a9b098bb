"""Every setting of the pipeline, read once from params.yaml into typed, frozen objects.

A wrong or unknown key stops the run before any work starts, naming the key and what is
allowed: a typo in params.yaml must never silently fall back to a default.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.digests import MNIST_ARRAY_SHA256, MNIST_NPZ_SHA256, MNIST_NPZ_URL

PARAMS_FILE = Path("params.yaml")
MIRROR_ENV = "MNIST_MIRROR"
ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class IngestParams(_Section):
    source: Literal["keras", "mirror", "npz"] = "keras"
    url: str = MNIST_NPZ_URL
    url_sha256: Sha256 = MNIST_NPZ_SHA256
    mirror: str = ""
    npz_path: str = ""
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=3, ge=0, le=10)
    digests: dict[str, Sha256] = Field(default_factory=lambda: dict(MNIST_ARRAY_SHA256))

    @field_validator("digests")
    @classmethod
    def _four_arrays(cls, value: dict[str, str]) -> dict[str, str]:
        if sorted(value) != sorted(ARRAY_NAMES):
            raise ValueError(f"needs exactly the keys {', '.join(ARRAY_NAMES)}, got {sorted(value)}")
        return value


class ValidateParams(_Section):
    train_size: int = Field(default=60000, gt=0)
    test_size: int = Field(default=10000, gt=0)
    max_failing_indices: int = Field(default=10, ge=1, le=1000)


class PreprocessParams(_Section):
    scale: float = Field(default=255.0, gt=0)


class TrainParams(_Section):
    model: Literal["mlp", "cnn"] = "mlp"
    epochs: int = Field(default=5, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1)  # at most validate.train_size, checked below
    learning_rate: float = Field(default=0.001, gt=0, le=1)
    hidden_units: int = Field(default=128, ge=1, le=65536)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    steps_per_execution: int = Field(default=32, ge=1, le=10000)


class EvaluateParams(_Section):
    batch_size: int = Field(default=1000, ge=1, le=65536)


class Params(_Section):
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class ParamsError(ValueError):
    """params.yaml is unreadable or holds a key, type or value that is not allowed."""


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"]).replace("validate_", "validate")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; allowed keys are listed in README.md)"
    got = error.get("input")
    return f"{key}: {error['msg']} (got {got!r})"


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Turn an already-parsed YAML document into Params, or raise ParamsError naming each bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of stage sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source} is invalid:\n  {lines}") from None
    if problems := inconsistencies(params):
        raise ParamsError(f"{source} is invalid:\n  " + "\n  ".join(problems))
    return params


def inconsistencies(params: Params) -> list[str]:
    """Settings valid one by one that cannot work together; caught here, before any stage works."""
    problems = []
    if params.train.batch_size > params.validate_.train_size:
        problems.append(
            f"train.batch_size: {params.train.batch_size} is larger than the data "
            f"(validate.train_size: {params.validate_.train_size} training samples); lower train.batch_size"
        )
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a repeated setting is an error here."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the project root, where params.yaml lives") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        stream = io.StringIO(text)
        stream.name = str(path)  # YAML's messages then say `in "params.yaml", line 3`
        raw = yaml.load(stream, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only, no Python objects
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    return parse_params(raw, str(path))


def mirror_override() -> str | None:
    """The MNIST_MIRROR environment variable, which wins over the source in params.yaml."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return value or None
