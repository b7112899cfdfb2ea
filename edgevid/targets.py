"""Deployment targets: one YAML per target in ``targets/``, validated into a ``Target``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import EdgevidError, UnknownNameError, suggest
from .paths import data_file

Precision = Literal["fp32", "fp16", "int8"]


class ShapePolicy(BaseModel):
    """Input shapes an artifact accepts: static batch by default, an optional batch range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(1, gt=0)
    min_batch: int | None = Field(None, gt=0)
    max_batch: int | None = Field(None, gt=0)

    @property
    def dynamic(self) -> bool:
        return self.max_batch is not None and self.max_batch != (self.min_batch or self.batch)

    @model_validator(mode="after")
    def _check_range(self):
        lo, hi = self.min_batch or self.batch, self.max_batch or self.batch
        if not lo <= self.batch <= hi:
            raise ValueError(f"batch {self.batch} outside [min_batch {lo}, max_batch {hi}]")
        return self


class Target(BaseModel):
    """What differs between deployment targets; backend options are passed through untouched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    aliases: tuple[str, ...] = ()
    backend: str
    device: str = Field(description="device the backend runs on: cpu, GPU, NPU, cuda, xnnpack ...")
    precisions: tuple[Precision, ...]
    default_precision: Precision
    threads: int | None = Field(None, gt=0, description="CPU threads; None = the backend's default")
    input_shape: ShapePolicy = ShapePolicy()
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check_default(self):
        if self.default_precision not in self.precisions:
            raise ValueError(f"default_precision {self.default_precision} not in precisions {self.precisions}")
        return self

    def check_precision(self, precision: str | None) -> str:
        precision = precision or self.default_precision
        if precision not in self.precisions:
            raise EdgevidError(
                f"--precision {precision} is not supported by target {self.name}"
                f" (supported: {', '.join(self.precisions)})"
            )
        return precision


def targets_dir() -> Path:
    return data_file("targets")


@lru_cache(maxsize=None)
def _load_all(directory: str) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
            target = Target(name=raw.pop("name", path.stem), **raw)
        except (yaml.YAMLError, ValidationError, TypeError) as exc:
            first = str(exc).replace("\n", " ")[:300]
            raise EdgevidError(f"target file {path} is invalid: {first}") from None
        if target.name != path.stem:
            raise EdgevidError(f"target file {path} declares name {target.name!r}; rename the file or the target")
        from .backends import backend_names
        from .backends.options import validate_options

        if target.backend not in backend_names():
            raise EdgevidError(f"target file {path}: unknown backend {target.backend!r}."
                               f"{suggest(target.backend, backend_names())}")
        validate_options(target.backend, dict(target.options), f"target file {path}: option")
        targets[target.name] = target
    return targets


def list_targets(directory: Path | None = None) -> list[Target]:
    return list(_load_all(str(directory or targets_dir())).values())


def get_target(name: str, directory: Path | None = None) -> Target:
    """Look a target up by name or alias; unknown names get the closest suggestions."""
    targets = _load_all(str(directory or targets_dir()))
    for target in targets.values():
        if name == target.name or name in target.aliases:
            return target
    names = list(targets) + [a for t in targets.values() for a in t.aliases]
    raise UnknownNameError(f"unknown target {name!r}.{suggest(name, names)} Run `edgevid targets` for the list.")
