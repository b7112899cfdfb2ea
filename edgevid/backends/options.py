"""Typed backend options: one pydantic model per backend (unknown keys are one-line errors).

Options come from a target's YAML (``options:``) and from ``--option KEY=VALUE`` / build flags;
``validate_options`` checks the merged set before any work starts and returns it as a plain dict
of the keys that were set, which is what the backends read. Torch-free.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import EdgevidError, suggest


class CommonOptions(BaseModel):
    """Options every backend accepts (the build and the ``--max-drop`` search set them)."""

    model_config = ConfigDict(extra="forbid")

    keep_float: list[str] | None = Field(None, description="layers kept in float (names as `edgevid sensitivity` lists them)")
    max_drop: float | None = Field(None, ge=0, lt=100)
    val_data: str | None = None
    val_size: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)


class TorchEagerOptions(CommonOptions):
    pass


class OnnxRuntimeOptions(CommonOptions):
    calibrate_method: Literal["entropy", "minmax", "percentile"] | None = None
    op_types_to_quantize: list[str] | None = Field(None, description="null quantizes every op type")
    per_channel: bool | None = None
    nodes_to_exclude: list[str] | None = None
    float_activation_matmuls: bool | None = None


class OpenVINOOptions(CommonOptions):
    device: str | None = None
    inference_precision: str | None = None
    preset: Literal["mixed", "performance"] | None = None
    fast_bias_correction: bool | None = None
    smooth_quant_alpha: float | None = None
    subset_size: int | None = Field(None, ge=1)


class ExecuTorchOptions(CommonOptions):
    coreml: bool | None = None
    conv3d_strategy: str | None = None
    activation_observer: Literal["histogram", "minmax"] | None = Field(
        None, description="PT2E activation ranges: histogram (default, L2-optimal range) or minmax (cheaper calibration)")


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


OPTIONS: dict[str, type[CommonOptions]] = {
    "torch_eager": TorchEagerOptions,
    "onnxruntime": OnnxRuntimeOptions,
    "openvino": OpenVINOOptions,
    "executorch": ExecuTorchOptions,
    "tensorrt": TensorRTOptions,
}


def validate_options(backend: str, options: dict[str, Any], where: str = "--option") -> dict[str, Any]:
    """The options that were set, checked against ``backend``'s model; one-line error otherwise."""
    model = OPTIONS[backend]
    for key in options:
        if key not in model.model_fields:
            raise EdgevidError(f"{where} {key}: unknown option for the {backend} backend.{suggest(key, model.model_fields)}"
                               f" Known: {', '.join(sorted(model.model_fields))}")
    try:
        checked = model.model_validate({k: (str(v) if k in _STRINGS and isinstance(v, (int, float)) else v)
                                        for k, v in options.items()})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        raise EdgevidError(f"{where} {key}={options.get(error['loc'][0])!r}: {error['msg']}") from None
    return checked.model_dump(exclude_unset=True, mode="json")


_STRINGS = {"tensorrt", "jetpack"}  # YAML reads "10.3" as a float and 6 as an int
