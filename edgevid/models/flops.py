"""Parameter and FLOP counts of a variant, computed on the meta device (no memory, no weights).

Convention: FLOPs = 2 x multiply-accumulates, as counted by ``torch.utils.flop_counter`` (convs,
linear layers and matmuls; elementwise ops, norms and softmax are not counted). Published X3D
and SlowFast figures count MACs ("FLOPs" in their tables), so divide ours by 2 to compare.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import canonical_name, get_entry


@lru_cache(maxsize=None)
def count(name: str) -> tuple[int, float]:
    """(parameters, GFLOPs per view) of a registered variant at its clip spec."""
    entry = get_entry(canonical_name(name))
    with torch.device("meta"), torch.no_grad():
        model = entry.builder(num_classes=entry.spec.num_classes).eval().requires_grad_(False)
        params = sum(p.numel() for p in model.parameters())
        x = torch.empty(entry.spec.input_shape(1))
        with FlopCounterMode(display=False) as counter:
            model(x)
    return params, counter.get_total_flops() / 1e9
