"""Typed backend options: each backend declares its model in its own package; validation reads it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from edgevid import backends
from edgevid.backends import backend_names, get_backend
from edgevid.backends.options import CommonOptions, validate_options
from edgevid.errors import EdgevidError, UnknownNameError
from edgevid.targets import list_targets

RUNTIMES = ("torch", "openvino", "nncf", "onnxruntime", "onnx", "executorch", "tensorrt", "pycuda", "modelopt")


@pytest.mark.parametrize("name", backend_names())
def test_every_backend_declares_its_options_model_in_its_own_package(name):
    model = get_backend(name).options_model
    assert issubclass(model, CommonOptions) and model is not CommonOptions
    assert model.__module__ == f"edgevid.backends.{name}.options"
    assert set(CommonOptions.model_fields) <= set(model.model_fields)  # keep_float, max_drop ... everywhere


def test_validation_uses_the_backends_own_model():
    assert validate_options("openvino", {"smooth_quant_alpha": 0.5}) == {"smooth_quant_alpha": 0.5}
    with pytest.raises(EdgevidError, match="--option subset_size: unknown option for the onnxruntime backend"):
        validate_options("onnxruntime", {"subset_size": 8})  # another backend's option
    with pytest.raises(EdgevidError, match="Did you mean calibrate_method"):
        validate_options("tensorrt", {"calibrate_methd": "max"})
    with pytest.raises(EdgevidError, match=r"calibrate_method='minmax'"):
        validate_options("tensorrt", {"calibrate_method": "minmax"})  # ONNX Runtime's name, not TensorRT's
    with pytest.raises(UnknownNameError, match="unknown backend 'openvno'"):
        validate_options("openvno", {})


def test_tensorrt_versions_read_from_yaml_as_numbers_stay_text():
    assert validate_options("tensorrt", {"tensorrt": 10.3, "jetpack": 6}) == {"tensorrt": "10.3", "jetpack": "6"}
    with pytest.raises(EdgevidError, match="tensorrt="):
        validate_options("tensorrt", {"tensorrt": [10]})


def test_target_yaml_options_are_checked_against_the_backend(tmp_path):
    target = {"description": "x", "backend": "openvino", "device": "CPU", "precisions": ["int8"],
              "default_precision": "int8", "options": {"smooth_quant_alpa": 0.5}}
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(target))
    with pytest.raises(EdgevidError) as info:
        list_targets(tmp_path)
    message = str(info.value)
    assert "typo.yaml" in message and "Did you mean smooth_quant_alpha" in message and "\n" not in message
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**target, "options": {"smooth_quant_alpha": 0.5}}))
    assert list_targets(tmp_path)[0].options == {"smooth_quant_alpha": 0.5}


def test_shipped_targets_validate_against_their_backends():
    for target in list_targets():
        assert validate_options(target.backend, dict(target.options)) is not None, target.name


def test_a_backend_brings_its_options_with_it(tmp_path, monkeypatch):
    """A backend outside the five: its options model comes from its own Backend class, nothing central."""
    (tmp_path / "toy_backend.py").write_text(textwrap.dedent("""
        from edgevid.backends.base import Backend
        from edgevid.backends.options import CommonOptions

        class ToyOptions(CommonOptions):
            gain: float | None = None

        class ToyBackend(Backend):
            name = "toy"
            options_model = ToyOptions
            def build(self, request): ...
            def open(self, artifact, threads=None, mode="latency"): ...

        BACKEND = ToyBackend()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(backends._MODULES, "toy", "toy_backend")
    assert validate_options("toy", {"gain": 2, "threads": 1}) == {"gain": 2.0, "threads": 1}
    with pytest.raises(EdgevidError, match="Did you mean gain"):
        validate_options("toy", {"gian": 2})


def test_options_validate_without_torch_or_any_runtime():
    code = ("import sys; from edgevid.backends import backend_names; from edgevid.backends.options import validate_options;"
            " import importlib; [importlib.import_module(f'edgevid.backends.{b}.options') for b in backend_names()];"
            " [validate_options(b, {}) for b in backend_names()];"
            f" print([m for m in {RUNTIMES!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_calibrator_setting_the_chosen_method_ignores_is_a_one_line_error():
    ort = {"quantizer": "ort"}
    assert validate_options("onnxruntime", {**ort, "percentile": 99.9}) == {**ort, "percentile": 99.9}  # its default method
    with pytest.raises(EdgevidError, match=r"^--option: percentile is read by calibrate_method=percentile only \(this is"
                                           r" minmax\)$"):
        validate_options("onnxruntime", {**ort, "calibrate_method": "minmax", "percentile": 99.9})
    with pytest.raises(EdgevidError, match="histogram_bins is read by the histogram calibrators"):
        validate_options("onnxruntime", {**ort, "calibrate_method": "minmax", "histogram_bins": 2048})
    assert validate_options("onnxruntime", {**ort, "calibrate_method": "entropy", "histogram_bins": 2048})


def test_a_setting_the_chosen_quantizer_does_not_read_is_a_one_line_error():
    """ONNX Runtime's quantizer settings need quantizer=ort; NNCF's recipe settings need quantizer=nncf; without
    the option the family decides (convolutional nets NNCF, transformers ORT), checked before any export."""
    from edgevid.backends import get_backend
    from edgevid.models import get_spec
    from edgevid.targets import get_target

    assert validate_options("onnxruntime", {"preset": "performance"}) == {"preset": "performance"}
    with pytest.raises(EdgevidError, match=r"^--option: calibrate_method, per_channel are read by quantizer=ort only"
                                           r" \(this is quantizer=nncf\): add quantizer=ort$"):
        validate_options("onnxruntime", {"quantizer": "nncf", "calibrate_method": "minmax", "per_channel": False})
    with pytest.raises(EdgevidError, match=r"activation_range is read by quantizer=nncf only \(this is quantizer=ort\):"
                                           r" set quantizer=nncf$"):
        validate_options("onnxruntime", {"quantizer": "ort", "activation_range": "minmax"})
    with pytest.raises(EdgevidError, match=r"percentile \(quantizer=ort\) and preset \(quantizer=nncf\) belong to"):
        validate_options("onnxruntime", {"percentile": 99.9, "preset": "mixed"})
    with pytest.raises(EdgevidError, match=r"quantizer='tflite'"):
        validate_options("onnxruntime", {"quantizer": "tflite"})
    backend, target = get_backend("onnxruntime"), get_target("onnx-cpu")
    backend.check_request(target, {"calibrate_method": "minmax"}, get_spec("uniformerv2_synth"))  # a transformer: ORT
    backend.check_request(target, {"preset": "performance"}, get_spec("x3d_synth"))  # a convolutional net: NNCF
    with pytest.raises(EdgevidError, match=r"^--option: calibrate_method is read by quantizer=ort only \(this is"
                                           r" quantizer=nncf\): add quantizer=ort \(x3d_synth defaults to quantizer=nncf\)$"):
        backend.check_request(target, {"calibrate_method": "minmax"}, get_spec("x3d_synth"))