import pytest
import yaml

from edgevid.errors import EdgevidError, UnknownNameError
from edgevid.targets import get_target, list_targets

REQUIRED = {"jetson-orin", "jetson-xavier", "rtx", "intel-cpu", "intel-gpu", "intel-npu", "android-arm64", "ios", "onnx-cpu"}


def test_shipped_targets_validate_and_cover_the_required_set():
    names = {t.name for t in list_targets()}
    assert REQUIRED <= names


@pytest.mark.parametrize("alias,name", [("jetson", "jetson-orin"), ("android", "android-arm64"), ("rtx", "rtx")])
def test_aliases_resolve(alias, name):
    assert get_target(alias).name == name


def test_unknown_target_suggests_closest():
    with pytest.raises(UnknownNameError, match="jetson-orin"):
        get_target("jetson-orn")


def test_precision_check():
    target = get_target("onnx-cpu")
    assert target.check_precision(None) == "int8"
    with pytest.raises(EdgevidError, match="--precision fp16 is not supported by target onnx-cpu"):
        target.check_precision("fp16")


def test_invalid_target_file_is_one_line_error(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"description": "x", "backend": "onnxruntime", "device": "cpu",
                                                       "precisions": ["int4"], "default_precision": "int4"}))
    with pytest.raises(EdgevidError) as info:
        list_targets(tmp_path)
    assert "bad.yaml" in str(info.value) and "\n" not in str(info.value)


def test_dynamic_batch_policy():
    rtx = get_target("rtx")
    assert rtx.input_shape.dynamic and rtx.input_shape.max_batch == 8
    assert not get_target("jetson").input_shape.dynamic
