"""Options of the OpenVINO backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..options import CommonOptions


class OpenVINOOptions(CommonOptions):
    device: str | None = None
    inference_precision: str | None = None
    preset: Literal["mixed", "performance"] | None = None
    fast_bias_correction: bool | None = None
    smooth_quant_alpha: float | None = None
    subset_size: int | None = Field(None, ge=1)
    activation_range: Literal["histogram", "default", "minmax", "mean_minmax", "median_minmax", "mean_no_outliers_minmax",
                              "mean_quantile"] | None = Field(
        None, description="NNCF's range estimator for activations (RangeEstimatorParametersSet): histogram (edgevid's"
                          " default), default (NNCF's own choice) or another set")
    float_activation_matmuls: bool | None = Field(
        None, description="keep MatMuls of two activations (attention products, an attention pool) float; default:"
                          " on for transformers, as ONNX Runtime's option of the same name")
