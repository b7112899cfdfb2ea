"""Options of the ExecuTorch backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..options import CommonOptions


class ExecuTorchOptions(CommonOptions):
    coreml: bool | None = None
    conv3d_strategy: str | None = Field(
        None, description="auto (timed per layer, cached) | taps | channels; default channels for INT8, auto for FP32")
    activation_observer: Literal["histogram", "minmax"] | None = Field(
        None, description="PT2E activation ranges: histogram (default, L2-optimal range) or minmax (cheaper calibration)")
    int8_adds: bool | None = Field(None, description="quantize tensor adds (residual sums); false runs them in float")
