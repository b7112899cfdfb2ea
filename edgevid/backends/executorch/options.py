"""Options of the ExecuTorch backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..options import CommonOptions


class ExecuTorchOptions(CommonOptions):
    coreml: bool | None = None
    conv3d_strategy: str | None = None
    activation_observer: Literal["histogram", "minmax"] | None = Field(
        None, description="PT2E activation ranges: histogram (default, L2-optimal range) or minmax (cheaper calibration)")
