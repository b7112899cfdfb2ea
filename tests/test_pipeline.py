"""The shared pipeline: rebuild hints that rebuild, verified reference weights, --keep-float under
--max-drop, stale-artifact detection, one report writer."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[onnx]'")

import harness_models as hm  # noqa: E402
from helpers import assert_one_line_error, run_cli  # noqa: E402

from edgevid.artifact import Artifact  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402

PRELUDE = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import harness_models"


def _layer(scope: str) -> str:
    """The first ONNX layer of the tiny model's PyTorch module ``scope``, named as `edgevid sensitivity` lists it."""
    import tempfile

    from edgevid.backends import BuildRequest, get_backend
    from edgevid.models import create_model, get_spec
    from edgevid.targets import get_target

    with tempfile.TemporaryDirectory() as tmp:
        request = BuildRequest(model=create_model(hm.TINY), spec=get_spec(hm.TINY), target=get_target("onnx-cpu"),
                               precision="int8", out_dir=Path(tmp), calib=[])
        return next(layer.name for layer in get_backend("onnxruntime").quantizable_layers(request) if layer.scope == scope)


def _checkpoint(path: Path) -> Path:
    import torch

    torch.manual_seed(3)
    torch.save(hm.TinyVideoNet().state_dict(), path)
    return path


def test_the_rebuild_hint_rebuilds_the_same_artifact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = _checkpoint(tmp_path / "tiny.pt")
    res = _layer("res")
    first = run_cli("build", "--model", hm.TINY, "--target", "onnx-cpu", "--precision", "int8", "--weights", "tiny.pt",
                    "--calib", "synthetic", "--calib-size", "6", "--option", "quantizer=ort", "--option", "calibrate_method=minmax",
                    "--option", "op_types_to_quantize=[Conv, MatMul]", "--keep-float", res,
                    "--out", "arts", prelude=PRELUDE)
    assert first.returncode == 0, first.stderr
    built = Artifact(tmp_path / "arts" / f"{hm.TINY}-onnx-cpu-int8")
    hint = built.rebuild_command()
    assert "--weights reference" not in hint and str(ckpt) in hint
    args = shlex.split(hint)
    assert args[:2] == ["edgevid", "build"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # the hint holds absolute paths: it works from any folder
    rebuilt = run_cli(*args[1:], prelude=PRELUDE)
    assert rebuilt.returncode == 0, (hint, rebuilt.stderr)
    again = Artifact(built.path)
    assert again.manifest.created >= built.manifest.created
    for field in ("calibration", "quantization", "build", "input_shape", "labels"):
        assert getattr(again.manifest, field) == getattr(built.manifest, field), field
    assert (again.manifest.weights.path, again.manifest.weights.sha256) == (str(ckpt), built.manifest.weights.sha256)
    assert res in again.manifest.quantization["kept_float"]


def test_reference_weights_are_absolute_and_verified(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = _checkpoint(tmp_path / "tiny.pt")
    proc = run_cli("build", "--model", hm.TINY, "--target", "onnx-cpu", "--precision", "fp32", "--weights", "tiny.pt",
                   "--out", "arts", prelude=PRELUDE)
    assert proc.returncode == 0, proc.stderr
    art = tmp_path / "arts" / f"{hm.TINY}-onnx-cpu-fp32"
    assert Artifact(art).manifest.weights.path == str(ckpt)
    val = ensure_split("val", 6)
    monkeypatch.chdir(tmp_path.parent)  # eval from another folder finds the same checkpoint
    proc = run_cli("eval", str(art), "--data", str(val), prelude=PRELUDE)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((art / "report.json").read_text())["eval"]["agreement"] == 100.0
    _checkpoint(ckpt)  # same seed, same file: still fine
    import torch

    torch.manual_seed(4)
    torch.save(hm.TinyVideoNet().state_dict(), ckpt)  # the checkpoint changed under the artifact
    proc = run_cli("eval", str(art), "--data", str(val), "--restart", prelude=PRELUDE)
    assert_one_line_error(proc, str(ckpt), "not the one the artifact was built from")


def test_keep_float_survives_max_drop(tmp_path):
    from edgevid.harness.mixed import build_with_budget

    val = ensure_split("val", 6)
    res = _layer("res")
    artifact = build_with_budget(hm.TINY, "onnx-cpu", 99.0, weights="random", calib="synthetic", calib_size=6,
                                 out=tmp_path, options={"keep_float": [res]}, val_data=str(val), val_size=6,
                                 threads=1)
    quant = artifact.manifest.quantization
    assert res in quant["kept_float"] and res in quant["layers_float"]  # the user's layer stayed float
    assert res not in [k["layer"] for k in quant["mixed_precision"]["kept_float"]]  # not a search result
    Artifact(artifact.path).verify()  # the search record was sealed with the artifact, not written after it


def test_bench_rebuilds_stale_artifacts_only(tmp_path):
    from edgevid.bench import ensure_artifact
    from edgevid.targets import get_target

    target = get_target("onnx-cpu")
    path, built = ensure_artifact(hm.TINY, target, "int8", tmp_path, "random", "synthetic", 6, False)
    assert built
    path, built = ensure_artifact(hm.TINY, target, "int8", tmp_path, "random", "synthetic", 6, False)
    assert not built  # same request: reused
    created = Artifact(path).manifest.created
    path, built = ensure_artifact(hm.TINY, target, "int8", tmp_path, "random", "synthetic", 8, False)
    assert built and Artifact(path).manifest.calibration.clips == 8 and Artifact(path).manifest.created >= created


def test_golden_remake_hint_is_runnable(tmp_path):
    from edgevid.harness import golden
    from edgevid.harness.errors import PackError

    val = ensure_split("val", 6)
    art = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)
    pack = golden.make_pack(hm.TINY, val, 2, tmp_path / "pack", weights=str(_checkpoint(tmp_path / "w.pt")), threads=1)
    with pytest.raises(PackError) as info:
        golden.check_fit(golden.load_pack(pack), Artifact(art.path))
    hint = str(info.value).split("`")[1]
    args = shlex.split(hint.replace("VIDEOS", str(val)).replace(" N ", " 2 ").replace("NEW_PACK", str(tmp_path / "new")))
    proc = run_cli(*args[1:], prelude=PRELUDE)
    assert proc.returncode == 0, (hint, proc.stderr)
    golden.check_fit(golden.load_pack(tmp_path / "new"), Artifact(art.path))


def test_bench_refreshes_report_md(tmp_path):
    from edgevid.bench import bench_artifact

    art = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)
    bench_artifact(art.path, 1, (), 0.05, False, True, 1, None)
    assert "bench" in json.loads((art.path / "report.json").read_text())
    assert (art.path / "report.md").is_file()
