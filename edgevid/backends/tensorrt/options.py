"""Options of the TensorRT backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..options import CommonOptions


class TensorRTOptions(CommonOptions):
    tensorrt: str | None = Field(None, description="TensorRT version the target runs")
    jetpack: str | None = None
    workspace_mb: int | None = Field(None, ge=1)
    dla_cores: int | None = Field(None, ge=0)
    dla_core: int | None = Field(None, ge=0)
    from_onnx: str | None = None
    calibrate_method: Literal["max", "entropy", "percentile"] | None = Field(
        None, description="activation ranges; percentile needs qdq_tool: ort (ModelOpt has max and entropy)")
    percentile: float | None = Field(None, gt=50, le=100, description="calibrate_method=percentile: the kept share of |x| (default 99.98)")
    qdq_placement: Literal["weighted", "modelopt"] | None = None
    qdq_tool: Literal["modelopt", "ort"] | None = None
    high_precision: Literal["fp16", "fp32", "bf16"] | None = None
    nodes_to_exclude: list[str] | None = None

    @field_validator("tensorrt", "jetpack", mode="before")
    @classmethod
    def _version_as_text(cls, value):
        """YAML reads ``10.3`` as a float and ``6`` as an int: versions are text."""
        return str(value) if isinstance(value, (int, float)) else value

    @model_validator(mode="after")
    def _percentile_needs_ort(self):
        method = self.calibrate_method or "max"
        if method == "percentile" and (self.qdq_tool or "modelopt") != "ort":
            raise ValueError("calibrate_method=percentile is ONNX Runtime's calibrator: add qdq_tool: ort"
                             " (ModelOpt calibrates with max or entropy)")
        if self.percentile is not None and method != "percentile":
            raise ValueError(f"percentile is read by calibrate_method=percentile only (this is {method})")
        return self
