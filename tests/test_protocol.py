"""`--protocol`: X3D built, evaluated and packed under SlowFast's test head (softmax averaged over
the head's positions) next to the default (pytorchvideo's mean logits), end to end."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[onnx]'")

from helpers import assert_one_line_error, run_cli  # noqa: E402

from edgevid.artifact import Artifact  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.errors import EdgevidError  # noqa: E402
from edgevid.models import get_spec  # noqa: E402
from edgevid.spec import protocol_name, with_protocol  # noqa: E402


def test_protocol_names_and_refusals():
    spec = get_spec("x3d_s")
    assert protocol_name(spec) == "default"
    slowfast = with_protocol(spec, "slowfast")
    assert slowfast.protocol.head_average == "softmax" and protocol_name(slowfast) == "slowfast"
    assert protocol_name(with_protocol(slowfast, "default")) == "default"
    assert with_protocol(spec, None) is spec
    with pytest.raises(EdgevidError, match="choose one of default, slowfast"):
        with_protocol(spec, "pyslowfast")
    with pytest.raises(EdgevidError, match="timesformer family has one test protocol; drop --protocol"):
        with_protocol(get_spec("timesformer_b"), "slowfast")


def test_the_slowfast_head_is_what_every_path_rebuilds():
    """prepare_model (build, golden make, --max-drop) and reference_model (eval, farm) give the same
    softmax head; at X3D-XS's test crop it leaves 2x2 positions, so the two averages differ."""
    import torch

    from edgevid.artifact import Manifest
    from edgevid.pipeline import prepare_model, reference_model

    default = prepare_model("x3d_xs", "random")
    slowfast = prepare_model("x3d_xs", "random", protocol="slowfast")
    assert slowfast.net.head.position_average == "softmax" and default.net.head.position_average == "logits"
    manifest = Manifest(model="x3d_xs", spec=slowfast.spec, labels=slowfast.labels, target="onnx-cpu",
                        backend="onnxruntime", device="cpu", precision="fp32", weights=slowfast.weights,
                        input_shape=list(slowfast.spec.input_shape(1)))
    again = reference_model(manifest).eval()
    with torch.no_grad():  # the seeded init's classifier is near zero: widen it (the same in all three)
        for net in (default.net, slowfast.net, again):
            net.head.classifier.weight.mul_(200)
    torch.manual_seed(1)
    clip = torch.randn(slowfast.spec.input_shape(1))
    with torch.no_grad():
        log_mean_softmax = slowfast.net.eval()(clip)
        mean_logits = default.net.eval()(clip)
        assert torch.equal(again(clip), log_mean_softmax)
    assert torch.allclose(torch.logsumexp(log_mean_softmax, -1), torch.zeros(1), atol=1e-5)  # log-probabilities
    gap = (log_mean_softmax - torch.log_softmax(mean_logits, -1)).abs().max().item()
    assert gap > 1e-4, "2x2 positions: the mean of softmax is not the softmax of the mean"


def test_build_eval_and_pack_under_the_slowfast_protocol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = ensure_split("val", 6)
    common = ("--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "fp32", "--weights", "reference", "--out", "arts")
    assert run_cli("build", *common).returncode == 0
    default = Artifact(tmp_path / "arts" / "x3d_synth-onnx-cpu-fp32")

    refused = run_cli("eval", str(default.path), "--data", str(data), "--protocol", "slowfast")
    assert_one_line_error(refused, "built for the default protocol", "--protocol slowfast")
    hint = refused.stderr.split("`")[1]
    assert run_cli(*shlex.split(hint)[1:]).returncode == 0  # the hint, run as printed
    slowfast = Artifact(tmp_path / "arts" / "x3d_synth-onnx-cpu-fp32-slowfast")
    assert slowfast.manifest.spec.protocol.head_average == "softmax"
    assert "--protocol slowfast" in slowfast.rebuild_command() and default.path.is_dir()  # beside, not over it

    ok = run_cli("eval", str(slowfast.path), "--data", str(data), "--protocol", "slowfast", "--json", "e.json")
    assert ok.returncode == 0, ok.stderr
    result = slowfast.read_report()["eval"]
    assert result["protocol"] == "slowfast" and result["agreement"] == 100.0  # the reference follows the artifact's head
    assert_one_line_error(run_cli("eval", str(slowfast.path), "--data", str(data), "--protocol", "default"),
                          "built for the slowfast protocol")

    from edgevid.backends import open_runner

    clip = np.random.default_rng(0).standard_normal(default.manifest.input_shape).astype(np.float32)
    with open_runner(default) as a, open_runner(slowfast) as b:
        logits, log_probs = a(clip), b(clip)
    # x3d_synth is trained at its test crop: one position, so SlowFast's head is the softmax of the logits
    np.testing.assert_allclose(np.exp(log_probs), np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), atol=1e-5)

    pack = run_cli("golden", "make", "--model", "x3d_synth", "--weights", "reference", "--data", str(data), "--clips", "2",
                   "--out", "pack")
    assert pack.returncode == 0, pack.stderr
    unfit = run_cli("golden", "run", str(slowfast.path), "pack")
    assert_one_line_error(unfit, "protocol", "--protocol slowfast")
    assert_one_line_error(run_cli("build", *common, "--protocol", "slowfast", "--model", "tubevit_synth"),
                          "--protocol slowfast", "one test protocol")
