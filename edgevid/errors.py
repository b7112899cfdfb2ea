"""User-facing errors: each carries one line that names the input at fault and the fix.

The CLI prints ``str(error)`` without a traceback and exits with ``exit_code``.
"""


class EdgevidError(Exception):
    """Base class for errors caused by bad input or a missing dependency."""

    exit_code = 2


class UnknownNameError(EdgevidError):
    """An unknown model, target, backend or precision name."""


class CheckpointError(EdgevidError):
    """A checkpoint that cannot be read or does not fit the model."""


class DataError(EdgevidError):
    """A video, dataset manifest or calibration set that cannot be used."""


class BackendUnavailable(EdgevidError):
    """An optional backend whose Python packages are not installed."""

    exit_code = 3


class ArtifactError(EdgevidError):
    """An artifact folder that is missing files, tampered with, or built for another machine."""


def suggest(name: str, choices) -> str:
    """Return ' Did you mean X?' for the closest names, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(close)}?" if close else ""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]
