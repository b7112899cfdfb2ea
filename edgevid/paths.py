"""Where edgevid keeps caches: ``$EDGEVID_HOME`` (default ``~/.cache/edgevid``)."""

from __future__ import annotations

import os
from pathlib import Path


def edgevid_home() -> Path:
    return Path(os.environ.get("EDGEVID_HOME") or Path.home() / ".cache" / "edgevid")


def data_file(kind: str) -> Path:
    """A shipped data folder (``targets`` or ``calibration``): in the wheel, or the source tree."""
    installed = Path(__file__).parent / "_data" / kind
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / kind
