"""Every spec's measured parameter count is the network's; the paper's figure stays as published."""

import pytest
import torch

from edgevid.models import get_entry, get_spec, list_models


SHIPPED_MODELS = [name for name in list_models() if get_entry(name).builder.__module__.startswith("edgevid.")]


@pytest.mark.parametrize("name", SHIPPED_MODELS)  # not the tiny models other test modules register
def test_spec_params_are_the_networks(name):
    entry = get_entry(name)
    with torch.device("meta"):
        model = entry.builder(num_classes=entry.spec.num_classes)
    counted = sum(p.numel() for p in model.parameters()) / 1e6
    assert entry.spec.params_m is not None and abs(entry.spec.params_m - counted) <= 0.005 + 1e-9, (
        f"{name}: spec says {entry.spec.params_m} M, the network has {counted:.4f} M")


def test_papers_figures_are_kept_as_published():
    assert get_spec("tubevit_b").published.params_m == 90.0 and get_spec("tubevit_b").params_m == 86.55
    for name, ours in (("timesformer_b", 121.57), ("timesformer_hr", 122.02), ("timesformer_l", 121.63)):
        assert get_spec(name).published.params_m == 121.4 and get_spec(name).params_m == ours


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_spec_says_transformer_exactly_for_attention_networks(name):
    """The backends' INT8 recipes switch on ``spec.transformer``: it must match the network (attention
    blocks come with LayerNorm; the convolutional X3D has none)."""
    entry = get_entry(name)
    with torch.device("meta"):
        model = entry.builder(num_classes=entry.spec.num_classes)
    has_attention = any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert entry.spec.transformer == has_attention, name


def test_smooth_quant_is_off_exactly_where_it_was_measured_to_cost_accuracy():
    off = {name for name in SHIPPED_MODELS if not get_spec(name).smooth_quant}
    assert off == {name for name in SHIPPED_MODELS if get_spec(name).family == "uniformerv2"}
    assert off and all(get_spec(name).transformer for name in off)
