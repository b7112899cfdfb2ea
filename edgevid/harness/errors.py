"""Errors of the accuracy harness (one line each; the CLI exits with ``exit_code``)."""

from __future__ import annotations

from ..errors import DataError, EdgevidError


class PackError(DataError):
    """A golden pack that is incomplete, altered, or made for another model."""


class NonFiniteOutput(EdgevidError):
    """The artifact produced NaN or Inf logits."""


class GateFailed(EdgevidError):
    """A run finished but missed one of its accuracy gates (exit 1, errors exit 2)."""

    exit_code = 1


class RunIncomplete(EdgevidError):
    """A run that stopped or skipped inputs; the partial report says what ran."""
