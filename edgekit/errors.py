"""One error hierarchy for edgekit: every message says what failed, where, and how to fix it."""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class of every error edgekit raises on purpose."""


class ModelError(EdgekitError, ValueError):
    """The model file or graph is malformed, truncated or inconsistent."""


class UnsupportedOpError(EdgekitError, NotImplementedError):
    """The model uses operators (or operator forms) edgekit cannot execute.

    ``unsupported`` lists every offending node as (node name, op type, domain, opset, reason),
    so a user sees all of them at once instead of fixing one per run.
    """

    def __init__(self, unsupported: list[tuple[str, str, str, int, str]]):
        self.unsupported = list(unsupported)
        lines = [
            f"  node {name!r}: {domain + '::' if domain else ''}{op} (opset {opset}){': ' + why if why else ''}"
            for name, op, domain, opset, why in self.unsupported
        ]
        super().__init__(
            f"{len(lines)} node(s) use operators edgekit does not support:\n" + "\n".join(lines)
            + "\nRun `edgekit ops` for the operators edgekit runs."
        )


class UnsupportedAPIError(EdgekitError, NotImplementedError):
    """An onnxruntime API edgekit does not provide; the message names what to use instead."""


class InputError(EdgekitError, ValueError):
    """A run or push was given inputs of the wrong name, shape, dtype or content."""


class TierError(EdgekitError):
    """A remote tier of a partitioned model is unreachable, too slow or answered with an error."""
