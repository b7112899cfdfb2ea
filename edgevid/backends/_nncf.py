"""NNCF post-training quantization settings shared by the backends that quantize with NNCF: OpenVINO
(an ``ov.Model``) and ONNX Runtime (an ONNX model, NNCF's ONNX backend): one recipe per model family,
written once. NNCF is imported inside the functions."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import EdgevidError

if TYPE_CHECKING:
    from ..spec import ModelSpec

log = logging.getLogger("edgevid")


class RangeRollbacks(logging.Filter):
    """Within ``with``: counts (and keeps off the console) NNCF's one warning per quantizer that the
    histogram range estimator falls back to min-max for a per-channel activation quantizer, and logs
    the count once at the end."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "Rollback to RangeEstimatorParametersSet.MINMAX" in record.getMessage():
            self.count += 1
            return False
        return True

    def __enter__(self) -> "RangeRollbacks":
        logging.getLogger("nncf").addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("nncf").removeFilter(self)
        if self.count:
            log.info("NNCF: %d per-channel activation quantizers use min-max ranges (its histogram estimator is"
                     " per-tensor only)", self.count)


def nncf_target_device(device: str):
    import nncf

    kind = device.split(".")[0].upper()
    return {"CPU": nncf.TargetDevice.CPU, "GPU": nncf.TargetDevice.GPU, "NPU": nncf.TargetDevice.NPU}.get(
        kind, nncf.TargetDevice.ANY)


def quantization_settings(spec: "ModelSpec", device: str, options: dict[str, Any],
                          tool: str = "nncf.quantize") -> tuple[dict[str, Any], dict[str, Any]]:
    """NNCF keyword arguments for the model of ``spec`` on ``device``, and a description for the manifest.

    Transformers (``spec.transformer``: UniFormerV2, TimeSformer, TubeViT): ``ModelType.TRANSFORMER``
    (SmoothQuant; LayerNorm / softmax / GELU / elementwise stay float), MIXED preset; SmoothQuant off
    where the spec says so (``spec.smooth_quant``: UniFormerV2, where it measurably costs accuracy).
    Convolutional nets (X3D and the rest): MIXED preset (symmetric per-channel weights, asymmetric activations, for SiLU
    outputs), full bias correction, which matters for the many small depthwise convolutions.
    Every family: NNCF's HISTOGRAM range estimator for activations (1,000 val clips, 32 calibration
    clips, agreement / logits SQNR against NNCF's default ranges: x3d_synth 99.7% / 26.0 dB vs
    99.3% / 18.9 dB; uniformerv2_synth 99.5% / 33.7 dB vs 99.0% / 24.6 dB; MEAN_QUANTILE cost x3d_synth
    3.6 points of agreement).
    The callers also keep every MatMul of two activations of a transformer float (their
    ``activation_matmuls``; option ``float_activation_matmuls``): NNCF's own attention patterns miss some (TubeViT's attention pool:
    tubevit_synth agreement 96.8% -> 99.5%, logits SQNR 27.2 -> 35.0 dB on 1,000 val clips).
    Target options ``fast_bias_correction`` / ``preset`` / ``subset_size`` / ``smooth_quant_alpha`` /
    ``activation_range`` (NNCF's activation range estimator) override.
    """
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters, AdvancedSmoothQuantParameters, QuantizationParameters)

    transformer = spec.transformer
    preset = getattr(nncf.QuantizationPreset, str(options.get("preset", "mixed")).upper())
    fast_bias = bool(options.get("fast_bias_correction", transformer))
    advanced = AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=True))
    alpha = options.get("smooth_quant_alpha", None if spec.smooth_quant else -1)
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
        raise EdgevidError(f"option smooth_quant_alpha={alpha!r}: give a number in [0, 1], or -1 to switch SmoothQuant off")
    if alpha is not None:  # -1 switches SmoothQuant off
        advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(matmul=float(alpha))
    activation_range = options.get("activation_range", "histogram")
    if activation_range != "default":
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        advanced.activations_range_estimator_params = getattr(RangeEstimatorParametersSet, activation_range.upper())
    kwargs = dict(
        preset=preset,
        target_device=nncf_target_device(device),
        subset_size=int(options.get("subset_size", 300)),
        fast_bias_correction=fast_bias,
        model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        advanced=advanced,
    )
    described = {
        "tool": tool,
        "family": spec.family,
        "model_type": "TRANSFORMER (LayerNorm/softmax/GELU/elementwise float)" if transformer else "default",
        "preset": preset.value,
        "target_device": kwargs["target_device"].value,
        "weights": "int8 symmetric per-channel",
        "bias_correction": "fast" if fast_bias else "full",
        "activation_range": "NNCF default" if activation_range == "default" else activation_range,
    }
    if transformer:
        described["smooth_quant_alpha"] = advanced.smooth_quant_alphas.matmul
    return kwargs, described
