"""Options of the ONNX Runtime backend (validated before any export; torch- and runtime-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..options import CommonOptions


class OnnxRuntimeOptions(CommonOptions):
    calibrate_method: Literal["entropy", "minmax", "percentile"] | None = None
    op_types_to_quantize: list[str] | None = Field(None, description="null quantizes every op type")
    per_channel: bool | None = None
    nodes_to_exclude: list[str] | None = None
    float_activation_matmuls: bool | None = None
