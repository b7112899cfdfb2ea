"""Options of the TensorRT backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..options import CommonOptions


class TensorRTOptions(CommonOptions):
    tensorrt: str | None = Field(None, description="TensorRT version the target runs")
    jetpack: str | None = None
    workspace_mb: int | None = Field(None, ge=1)
    dla_cores: int | None = Field(None, ge=0)
    dla_core: int | None = Field(None, ge=0)
    from_onnx: str | None = None
    calibrate_method: Literal["max", "entropy"] | None = None
    qdq_placement: Literal["weighted", "modelopt"] | None = None
    qdq_tool: Literal["modelopt", "ort"] | None = None
    high_precision: Literal["fp16", "fp32", "bf16"] | None = None
    nodes_to_exclude: list[str] | None = None

    @field_validator("tensorrt", "jetpack", mode="before")
    @classmethod
    def _version_as_text(cls, value):
        """YAML reads ``10.3`` as a float and ``6`` as an int: versions are text."""
        return str(value) if isinstance(value, (int, float)) else value
