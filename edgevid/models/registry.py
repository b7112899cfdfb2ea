"""Model registry: one builder per variant, each carrying its ModelSpec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import CheckpointError, UnknownNameError, suggest
from ..spec import ModelSpec


@dataclass(frozen=True)
class ModelEntry:
    spec: ModelSpec
    builder: Callable[..., nn.Module]
    aliases: tuple[str, ...] = ()


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec, aliases: tuple[str, ...] = ()):
    """Decorator: register ``builder(num_classes=..., **kwargs) -> nn.Module`` under ``spec.name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if spec.name in _REGISTRY or spec.name in _ALIASES:
            raise ValueError(f"model {spec.name!r} registered twice")
        _REGISTRY[spec.name] = ModelEntry(spec, builder, tuple(aliases))
        for alias in aliases:
            _ALIASES[alias] = spec.name
        return builder

    return wrap


def canonical_name(name: str) -> str:
    """Resolve an alias; raise a one-line error naming the closest models for unknown names."""
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        raise UnknownNameError(
            f"unknown model {name!r}.{suggest(name, list(_REGISTRY) + list(_ALIASES))}"
            " Run `edgevid models` for the list."
        )
    return name


def get_entry(name: str) -> ModelEntry:
    return _REGISTRY[canonical_name(name)]


def get_spec(name: str) -> ModelSpec:
    return get_entry(name).spec


def list_models() -> list[str]:
    """Canonical names of every registered variant, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int | None = None, weights: str | None = None, **kwargs) -> nn.Module:
    """Build a variant in eval mode.

    ``weights``: None builds with the builder's initialisation; a path loads a checkpoint in any
    layout the family supports (see ``edgevid.models.checkpoint``); ``"random"`` is explicit random
    init (for speed work). ``num_classes`` overrides the spec's head size; when a checkpoint's head
    has another size it is only re-initialised when ``num_classes`` is given.
    """
    entry = get_entry(name)
    n = num_classes or entry.spec.num_classes
    model = entry.builder(num_classes=n, **kwargs)
    if weights not in (None, "random"):
        from .checkpoint import load_checkpoint

        load_checkpoint(model, weights, family=entry.spec.family, reinit_head=num_classes is not None)
        check_finite(model, weights)
    return model.eval()


def check_finite(model: nn.Module, source: str) -> None:
    """Refuse weights with NaN/Inf: they build silently and later look like a quantization failure."""
    import torch

    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"checkpoint {source}: tensor {key} holds {bad} NaN/Inf value(s); the checkpoint is"
                                  " corrupt or from a diverged run: use another checkpoint")
