"""Typed backend options: what every backend accepts, and the check that runs before any work.

Each backend declares its own pydantic model (``backends/<name>/options.py``, named by
``Backend.options_model``) on top of ``CommonOptions``. Options come from a target's YAML
(``options:``) and from ``--option KEY=VALUE`` / build flags; ``validate_options`` checks the merged
set against the backend's model before any work starts (unknown keys are one-line errors with a
did-you-mean) and returns it as a plain dict of the keys that were set, which is what the backends
read. Torch-free, and free of every backend's runtime.
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


class NncfOptions(CommonOptions):
    """The NNCF recipe's overrides, for every backend that quantizes with NNCF (``backends/_nncf.py``)."""

    preset: Literal["mixed", "performance"] | None = None
    fast_bias_correction: bool | None = None
    smooth_quant_alpha: float | None = None
    activation_range: Literal["histogram", "default", "minmax", "mean_minmax", "median_minmax", "mean_no_outliers_minmax",
                              "mean_quantile"] | None = Field(
        None, description="NNCF's range estimator for activations (RangeEstimatorParametersSet): histogram (edgevid's"
                          " default), default (NNCF's own choice) or another set")
    float_activation_matmuls: bool | None = Field(
        None, description="keep MatMuls of two activations (attention products, an attention pool) float; default:"
                          " on for transformers")


def options_model(backend: str) -> type[CommonOptions]:
    """The options model ``backend`` declares (``Backend.options_model``); unknown names: one line."""
    from . import get_backend

    return get_backend(backend).options_model


def validate_options(backend: str, options: dict[str, Any], where: str = "--option") -> dict[str, Any]:
    """The options that were set, checked against ``backend``'s model; one-line error otherwise."""
    model = options_model(backend)
    for key in options:
        if key not in model.model_fields:
            raise EdgevidError(f"{where} {key}: unknown option for the {backend} backend.{suggest(key, model.model_fields)}"
                               f" Known: {', '.join(sorted(model.model_fields))}")
    try:
        checked = model.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        if not error["loc"]:  # a check across options (the model's validators)
            raise EdgevidError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None
        key = ".".join(str(p) for p in error["loc"])
        raise EdgevidError(f"{where} {key}={options.get(error['loc'][0])!r}: {error['msg']}") from None
    return checked.model_dump(exclude_unset=True, mode="json")
