"""Options of the OpenVINO backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from pydantic import Field

from ..options import NncfOptions


class OpenVINOOptions(NncfOptions):
    device: str | None = None
    inference_precision: str | None = None
    subset_size: int | None = Field(None, ge=1)
