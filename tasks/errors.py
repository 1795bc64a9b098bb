"""The errors every stage can raise, and the redaction applied to anything a user will see.

Kept apart from the stage modules so that the shared stage wrapper depends on nothing
stage-specific (and so DVC re-runs a stage only when code it really uses changes).
"""

from __future__ import annotations

import re


class StageError(RuntimeError):
    """A stage refused its input; the message says what is wrong and what to do."""


class SourceError(RuntimeError):
    """The data source is unreachable, refused us, or sent something that is not MNIST.

    transient: the network failed even after retries, so trying again later may help
    (the stage exits 75 and the Prefect task retries); otherwise retrying will not help.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#\s]*(?:sig|token|key|secret|passw|pwd|credential|auth)[^=&#\s]*=)[^&#\s]*")


def redact(value):
    """Strip `user:pass@` from URLs and blank secret-looking query values, in a string or any nested value."""
    if isinstance(value, str):
        return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", value))
    if isinstance(value, dict):
        return {redact(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
