"""Options of the ONNX Runtime backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..options import NncfOptions

#: options read only by ONNX Runtime's own quantizer (``quantizer: ort``), and only by NNCF's
ORT_QUANTIZER_OPTIONS = ("calibrate_method", "op_types_to_quantize", "percentile", "histogram_bins", "per_channel")
NNCF_QUANTIZER_OPTIONS = ("preset", "fast_bias_correction", "smooth_quant_alpha", "activation_range")


class OnnxRuntimeOptions(NncfOptions):
    quantizer: Literal["nncf", "ort"] | None = Field(
        None, description="INT8 Q/DQ from NNCF's ONNX backend with the OpenVINO recipe (default for convolutional"
                          " nets), or ONNX Runtime's quantize_static (default for transformers)")
    calibrate_method: Literal["entropy", "minmax", "percentile"] | None = None
    op_types_to_quantize: list[str] | None = Field(None, description="null quantizes every op type")
    percentile: float | None = Field(None, gt=50, le=100, description="percentile calibration: the kept share of |x| (default 99.98)")
    histogram_bins: int | None = Field(None, ge=128, le=65536, description="histogram calibrators' bins (ORT's defaults: entropy 128, percentile 2048)")
    per_channel: bool | None = None
    nodes_to_exclude: list[str] | None = None

    @model_validator(mode="after")
    def _settings_of_the_chosen_quantizer(self):
        """A setting the chosen quantizer (or calibrator) would not read is a mistake, not a no-op. Without
        ``quantizer`` the model's family decides (the backend's ``check_request``, before export); settings of both
        quantizers at once are wrong for either."""
        unread = unread_settings(self.model_fields_set, self.quantizer)
        if unread:
            raise ValueError(unread)
        method = self.calibrate_method or "percentile"  # ORT's quantizer's default here
        if self.percentile is not None and method != "percentile":
            raise ValueError(f"percentile is read by calibrate_method=percentile only (this is {method})")
        if self.histogram_bins is not None and method == "minmax":
            raise ValueError("histogram_bins is read by the histogram calibrators (percentile, entropy), not minmax")
        return self


def unread_settings(keys, quantizer: str | None) -> str | None:
    """Why some of ``keys`` would go unread with ``quantizer`` (None: not chosen yet), or None."""
    ort = [key for key in ORT_QUANTIZER_OPTIONS if key in keys]
    nncf = [key for key in NNCF_QUANTIZER_OPTIONS if key in keys]
    if quantizer is None:
        if ort and nncf:
            return (f"{', '.join(ort)} (quantizer=ort) and {', '.join(nncf)} (quantizer=nncf) belong to different"
                    " quantizers: keep one kind and set quantizer")
        return None
    unread = ort if quantizer == "nncf" else nncf
    if not unread:
        return None
    fix = "add quantizer=ort" if quantizer == "nncf" else "set quantizer=nncf"
    return (f"{', '.join(unread)} {'is' if len(unread) == 1 else 'are'} read by quantizer="
            f"{'ort' if quantizer == 'nncf' else 'nncf'} only (this is quantizer={quantizer}): {fix}")
