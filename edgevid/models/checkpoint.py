"""Loading official checkpoints: safe reading, layout detection, key remapping, readable mismatches.

Each family registers the layouts it can read with ``register_layout``. A layout converts a state
dict in its own naming into ours (the names of ``model.state_dict()``); our own layout needs no
registration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError

log = logging.getLogger("edgevid")

StateDict = dict[str, torch.Tensor]

# Containers that official training code wraps the weights in, tried in this order.
_WRAPPER_KEYS = ("model_state", "state_dict", "model", "module")


@dataclass(frozen=True)
class Layout:
    name: str
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    convert: Callable[[StateDict], StateDict]


_LAYOUTS: dict[str, list[Layout]] = {}


def register_layout(family: str, name: str, detect, convert) -> None:
    """Teach ``load_checkpoint`` a foreign key layout for ``family``."""
    _LAYOUTS.setdefault(family, []).append(Layout(name, detect, convert))


def layouts_for(family: str) -> list[str]:
    return ["edgevid"] + [layout.name for layout in _LAYOUTS.get(family, [])]


def read_state_dict(path: str | Path) -> StateDict:
    """Read a checkpoint file with ``weights_only=True`` and unwrap the usual containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an existing file to --weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or pickled-code files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({first[:200]}); it must be a PyTorch state dict file"
            " (weights only, no pickled code)"
        ) from None
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj, origin: str = "checkpoint") -> StateDict:
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise CheckpointError(f"{origin} holds no state dict of tensors (looked under {', '.join(_WRAPPER_KEYS)})")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in sd):  # DistributedDataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= max(1, len(obj) // 2)


def convert_state_dict(sd: StateDict, family: str, model: nn.Module) -> tuple[StateDict, str]:
    """Return ``sd`` in our naming and the name of the layout it was detected as."""
    own = set(model.state_dict())
    if own.intersection(sd) and len(own.intersection(sd)) >= len(sd) // 2:
        return dict(sd), "edgevid"
    for layout in _LAYOUTS.get(family, []):
        if layout.detect(sd):
            return layout.convert(dict(sd)), layout.name
    sample = ", ".join(sorted(sd)[:3])
    raise CheckpointError(
        f"checkpoint keys ({sample}, ...) match no known {family} layout"
        f" (known: {', '.join(layouts_for(family))}); is it a checkpoint for another model family?"
    )


def load_checkpoint(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    family: str,
    reinit_head: bool = False,
) -> str:
    """Load ``source`` (a file or a state dict) into ``model``; return the detected layout.

    All problems are reported together in one line: missing keys, unexpected keys, and keys whose
    shapes differ. A classifier whose size differs is re-initialised only when ``reinit_head``
    (``--num-classes`` on the CLI); otherwise it is an error that says so.
    """
    origin = str(source) if isinstance(source, (str, Path)) else "state dict"
    sd = read_state_dict(source) if isinstance(source, (str, Path)) else unwrap_state_dict(source)
    sd, layout = convert_state_dict(sd, family, model)

    own = model.state_dict()
    head = tuple(getattr(model, "classifier_keys", ()))
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    misshaped = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)

    head_mismatch = [k for k in misshaped if k in head]
    missing_allowed: set[str] = set()
    if head_mismatch and reinit_head and len(head_mismatch) == len(misshaped):
        first = head_mismatch[0]
        log.warning(
            "checkpoint classifier %s has shape %s, model %s: classifier re-initialised, backbone loaded",
            first, tuple(sd[first].shape), tuple(own[first].shape),
        )
        for k in head_mismatch:
            sd.pop(k)
        missing_allowed = set(head_mismatch)
        missing = sorted(set(missing) | missing_allowed)
        misshaped = []

    problems = []
    if [k for k in missing if k not in missing_allowed]:
        problems.append(_summarise("missing", [k for k in missing if k not in missing_allowed]))
    if unexpected:
        problems.append(_summarise("unexpected", unexpected))
    if misshaped:
        shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in misshaped]
        problems.append(_summarise("mis-shaped", shapes))
    if problems:
        hint = ""
        if misshaped and all(k in head for k in misshaped):
            hint = "; the classifier size differs: pass --num-classes to re-initialise the head"
        raise CheckpointError(f"{origin} ({layout} layout) does not fit the model: {'; '.join(problems)}{hint}")

    model.load_state_dict(sd, strict=not missing_allowed)
    return layout


def _summarise(kind: str, items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} {kind}: {', '.join(items[:limit])}{more}"


def rename_keys(sd: StateDict, rules: list[tuple[str, str]]) -> StateDict:
    """Apply ordered ``(old_substring_or_prefix, new)`` rules; a rule starting with '^' is a prefix."""
    out = {}
    for key, value in sd.items():
        new = key
        for old, repl in rules:
            if old.startswith("^"):
                if new.startswith(old[1:]):
                    new = repl + new[len(old) - 1:]
            else:
                new = new.replace(old, repl)
        out[new] = value
    return out
