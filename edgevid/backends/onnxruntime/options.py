"""Options of the ONNX Runtime backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..options import CommonOptions


class OnnxRuntimeOptions(CommonOptions):
    calibrate_method: Literal["entropy", "minmax", "percentile"] | None = None
    op_types_to_quantize: list[str] | None = Field(None, description="null quantizes every op type")
    percentile: float | None = Field(None, gt=50, le=100, description="percentile calibration: the kept share of |x| (default 99.98)")
    histogram_bins: int | None = Field(None, ge=128, le=65536, description="histogram calibrators' bins (ORT's defaults: entropy 128, percentile 2048)")
    per_channel: bool | None = None
    nodes_to_exclude: list[str] | None = None
    float_activation_matmuls: bool | None = None

    @model_validator(mode="after")
    def _settings_of_the_chosen_method(self):
        """A calibrator setting the chosen method would not read is a mistake, not a no-op."""
        method = self.calibrate_method or "percentile"  # the backend's default
        if self.percentile is not None and method != "percentile":
            raise ValueError(f"percentile is read by calibrate_method=percentile only (this is {method})")
        if self.histogram_bins is not None and method == "minmax":
            raise ValueError("histogram_bins is read by the histogram calibrators (percentile, entropy), not minmax")
        return self
