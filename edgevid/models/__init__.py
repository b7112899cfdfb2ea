"""Video-recognition models: a registry of variants, each with its ModelSpec.

Importing this package registers every family.
"""

from ..spec import ClipSpec, ModelSpec, Normalization, Published
from .checkpoint import load_checkpoint, read_state_dict, register_layout
from .registry import canonical_name, create_model, get_entry, get_spec, list_models, register_model

from . import timesformer, tubevit, uniformerv2, x3d  # noqa: E402,F401  (registers the families)

__all__ = [
    "ClipSpec", "ModelSpec", "Normalization", "Published",
    "canonical_name", "create_model", "get_entry", "get_spec", "list_models", "register_model",
    "load_checkpoint", "read_state_dict", "register_layout",
]
