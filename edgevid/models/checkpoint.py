"""Loading official checkpoints: safe reading, layout detection, key remapping, readable mismatches.

Each family registers the layouts it can read with ``register_layout``. A layout converts a state
dict in its own naming into ours (the names of ``model.state_dict()``); our own layout needs no
registration.

Reading never executes pickled code. Files are read with ``torch.load(weights_only=True)``; one it
refuses is read again by ``InertUnpickler``, which resolves torch's own weights-only allow-list
(tensor rebuilds, containers) as torch does and turns each reference to trainer-state code (PyTorch
Lightning's optimizer and LR-scheduler objects, such as the bound ``anneal_func`` method an old
``OneCycleLR`` pickles; hyper-parameter containers; numpy values) into an inert ``Inert``
placeholder that is never imported and never called. Any other global (``os.system``, ``exec``, a
project's own classes) refuses the file, and so does a file whose weights themselves need a
placeholder: then its weights cannot exist without running its code.
"""

from __future__ import annotations

import logging
import pickle
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, first_line

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


# --- reading without running pickled code ------------------------------------------------------

#: Where trainer state's code lives: references to these become inert placeholders. Matched on the
#: module's top-level package (``torch.optim``: its own subpackage), or on the exact global.
_TRAINER_STATE_PACKAGES = ("lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics", "numpy", "omegaconf")
_TRAINER_STATE_GLOBALS = frozenset({
    "builtins.getattr",  # how pickle references a bound method: getattr(obj, "name")
    "builtins.object", "copyreg._reconstructor", "copyreg.__newobj__",
    # builtin types as arguments (defaultdict(dict), a type in the hyper-parameters)
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.frozenset", "builtins.int", "builtins.float",
    "builtins.bool", "builtins.str", "builtins.bytes", "builtins.slice", "builtins.range", "builtins.type",
    "functools.partial", "argparse.Namespace", "collections.defaultdict", "collections.deque",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    "datetime.datetime", "datetime.timedelta",
})


class Inert:
    """What a pickled reference to code becomes: its name and what it would have received.

    Calling (pickle's REDUCE / NEWOBJ), ``__setstate__`` (BUILD), item and list appends only record
    their arguments; nothing of the named global is imported or run.
    """

    global_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.entries = args, kwargs, None, [], {}
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.entries[key] = value

    def append(self, value) -> None:
        self.items.append(value)

    def extend(self, values) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.global_name}>"


class RefusedGlobal(pickle.UnpicklingError):
    """A pickled global that is neither weights nor known trainer state."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _is_trainer_state(module: str, name: str) -> bool:
    top = module.split(".", 1)[0]
    return (top in _TRAINER_STATE_PACKAGES or module == "torch.optim" or module.startswith("torch.optim.")
            or f"{module}.{name}" in _TRAINER_STATE_GLOBALS)


class InertUnpickler(pickle.Unpickler):
    """Resolves torch's weights-only allow-list; trainer-state globals become ``Inert`` classes;
    every other global raises ``RefusedGlobal``. No global outside torch's allow-list is imported."""

    _placeholders: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle

        from torch._weights_only_unpickler import _get_allowed_globals, _get_user_allowed_globals

        # Protocol < 3 pickles name Python 2 modules (__builtin__.getattr): map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        for allowed in (_get_allowed_globals(), _get_user_allowed_globals()):
            if key in allowed:
                return allowed[key]
        if not _is_trainer_state(module, name):
            raise RefusedGlobal(key)
        if key not in self._placeholders:
            self._placeholders[key] = type(f"Inert[{key}]", (Inert,), {"global_name": key})
        return self._placeholders[key]


_INERT_PICKLE = types.ModuleType("edgevid_inert_pickle")
_INERT_PICKLE.Unpickler = InertUnpickler
_INERT_PICKLE.load = lambda file, **kwargs: InertUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]
_INERT_PICKLE.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def load_without_code(path: str | Path) -> Any:
    """``torch.load`` through ``InertUnpickler``: tensors as torch rebuilds them, trainer state as
    ``Inert`` placeholders; raises ``RefusedGlobal`` on any other global."""
    # weights_only=False only because torch allows no pickle_module beside weights_only=True; the
    # module given is what guarantees that nothing runs.
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_INERT_PICKLE)


def read_state_dict(path: str | Path) -> StateDict:
    """Read a checkpoint file without running pickled code and unwrap the usual containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an existing file to --weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or pickled-code files
        first = first_line(exc, 200)
        try:
            obj = load_without_code(path)  # e.g. a Lightning checkpoint's trainer state
        except RefusedGlobal as refused:
            raise CheckpointError(
                f"checkpoint {path} pickles {refused.name}, code that edgevid never runs; re-save its weights"
                " with torch.save(model.state_dict(), path) where the code is trusted"
            ) from None
        except Exception:
            raise CheckpointError(
                f"cannot read checkpoint {path} ({first}); it must be a PyTorch state dict file"
                " (weights only, no pickled code)"
            ) from None
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj, origin: str = "checkpoint") -> StateDict:
    if isinstance(obj, Inert):
        raise CheckpointError(
            f"{origin} is a pickled {obj.global_name} object: its weights exist only by running its code,"
            " which edgevid never does; save model.state_dict() instead"
        )
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    inert = [k for k, v in obj.items() if isinstance(v, Inert)] if isinstance(obj, Mapping) else []
    if inert:
        raise CheckpointError(
            f"{origin}: {inert[0]} is a pickled {obj[inert[0]].global_name} object, not a tensor; its weights exist"
            " only by running its code, which edgevid never does; save model.state_dict() instead"
        )
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


def rename_module(key: str, table: dict[str, str]) -> str | None:
    """``key`` with its leading module path renamed by ``table`` (``old`` or ``old.*``), or None."""
    for old, new in table.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return None


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
