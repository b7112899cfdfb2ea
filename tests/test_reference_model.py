"""The shipped SynthMotion reference models reach their accuracy on freshly generated clips."""

import json

import pytest
import torch

from edgevid.data.manifest import load_dataset
from edgevid.data.synthmotion import ensure_split
from edgevid.data.views import test_views as views_of
from edgevid.models import create_model, get_spec
from edgevid.models.weights import SHIPPED
from helpers import reference_weights

TARGETS = {"x3d_synth": 95.0, "uniformerv2_synth": 90.0, "timesformer_synth": 90.0, "tubevit_synth": 90.0}
# A reference model below its target is marked here (strict xfail, with the reason), so the gap stays
# visible and the mark must go the day the weights meet the target.
BELOW_TARGET: dict[str, str] = {
    "timesformer_synth": "training in phases on one shared CPU core (distilled from x3d_synth); the shipped"
                         " phase is below 90% top-1 (edgevid/models/weights/timesformer_synth.json)",
}


def _param(name, minimum):
    reason = BELOW_TARGET.get(name)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason and reference_weights(name) else []
    return pytest.param(name, minimum, marks=marks, id=name)


@pytest.mark.parametrize("name,minimum", [_param(n, m) for n, m in TARGETS.items()])
def test_reference_accuracy_on_fresh_val(name, minimum):
    weights = reference_weights(name)
    if weights is None:
        pytest.skip(f"{name} reference weights not trained yet (scripts/train_reference.py --model {name})")
    assert weights.stat().st_size <= 20 * 2**20
    meta = json.loads((SHIPPED / f"{name}.json").read_text())
    assert all(c.startswith("python scripts/train_reference.py") for c in meta["commands"])
    model = create_model(name, weights=str(weights))
    spec = get_spec(name)
    dataset = load_dataset(ensure_split("test", 200))  # the test split: never seen in training or model selection
    correct = 0
    with torch.inference_mode():
        for path, label in dataset.items:
            correct += int(model(torch.from_numpy(views_of(path, spec))).mean(0).argmax() == label)
    top1 = 100 * correct / len(dataset.items)
    print(f"{name}: top-1 {top1:.1f}% on {len(dataset.items)} fresh test clips ({spec.clip.frames}x{spec.clip.crop})")
    assert top1 >= minimum
