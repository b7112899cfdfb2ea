"""Golden packs: made on the host, run on the device with numpy + the backend runtime only; gates and bad packs."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[build]'")

import harness_models as hm  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.harness import golden  # noqa: E402
from edgevid.harness.errors import NonFiniteOutput, PackError, RunIncomplete  # noqa: E402
from edgevid.harness.eval import evaluate  # noqa: E402
from edgevid.harness.gates import find_gates  # noqa: E402
from edgevid.models import get_spec  # noqa: E402

VIDEOS = 12
LOOSE = "max_top1_drop: 100\nmin_agreement: 0\nmin_sqnr_db: 0\n"


@pytest.fixture(scope="module")
def val():
    return ensure_split("val", VIDEOS)


@pytest.fixture(scope="module")
def pack(val, tmp_path_factory):
    """12 videos x 2 test views of the tiny model, 5 videos per chunk (3 chunks)."""
    return golden.make_pack(hm.TINY, val, VIDEOS, tmp_path_factory.mktemp("golden") / "pack", weights="random",
                            chunk_videos=5, threads=1)


@pytest.fixture()
def int8(tmp_path):
    return hm.copy(hm.artifact(hm.TINY, "int8"), tmp_path)


def _loose(folder):
    path = folder / "loose.yaml"
    path.write_text(LOOSE)
    return path


def test_pack_layout_and_digest(pack):
    info = golden.load_pack(pack).info
    assert [c["videos"] for c in info["chunks"]] == [[0, 5], [5, 10], [10, 12]]
    assert info["views_per_video"] == 2 and info["input_shape"] == [3, 4, 32, 32]
    assert info["digest"] == golden.pack_digest(info) and len(info["labels"]) == 8
    with np.load(pack / "chunk-0001.npz") as chunk:
        assert chunk["inputs"].shape == (10, 3, 4, 32, 32) and chunk["ref_logits"].shape == (10, 8)
        assert set(chunk["video"]) == set(range(5, 10))


def test_golden_run_gives_the_eval_figures(pack, val, int8, tmp_path):
    result = golden.run_pack(int8.path, pack, gates=_loose(tmp_path), threads=1)
    reference = evaluate(int8.path, val, threads=1)
    assert result["status"] == "ok" and result["gates"]["passed"]
    assert [r["pred"] for r in result["per_video"]] == [r["pred"] for r in reference["per_video"]]
    for key in ("videos", "top1", "top5", "ref_top1", "agreement", "top1_drop"):
        assert result[key] == reference[key], key
    for key in ("cosine", "sqnr_db", "max_abs_diff"):
        assert result[key] == pytest.approx(reference[key], rel=1e-5), key
    assert json.loads((int8.path / "report.json").read_text())["golden"]["pack_digest"] == golden.load_pack(pack).info["digest"]


RUN_WITHOUT_TORCH = """
import atexit, sys
heavy = ("torch", "av")
atexit.register(lambda: print("IMPORTED", sorted({m.split(".")[0] for m in sys.modules} & set(heavy)), file=sys.stderr))
from edgevid.cli import main
sys.argv = ["edgevid", "golden", "run", *sys.argv[1:]]
main()
"""


def _device_run(*args):
    return subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_golden_run_imports_neither_torch_nor_av(pack, int8, tmp_path):
    proc = _device_run(int8.path, pack, "--gates", _loose(tmp_path), "--threads", "1", "--json", tmp_path / "g.json")
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "g.json").read_text())["videos"] == VIDEOS
    strict = tmp_path / "strict.yaml"
    strict.write_text("min_sqnr_db: 200\n")  # INT8 is never this close to FP32
    proc = _device_run(int8.path, pack, "--gates", strict, "--threads", "1")
    assert proc.returncode == 1 and "failed its gates" in proc.stderr and "min_sqnr_db 200" in proc.stderr
    assert "IMPORTED []" in proc.stderr and "Traceback" not in proc.stderr


def test_golden_run_on_openvino_imports_neither_torch_nor_av(pack, tmp_path):
    from edgevid.backends import get_backend

    if not get_backend("openvino").available(for_build=True):
        pytest.skip("OpenVINO not installed: pip install 'edgevid[openvino]'")
    art = hm.copy(hm.artifact(hm.TINY, "fp32", target="intel-cpu"), tmp_path)
    proc = _device_run(art.path, pack, "--threads", "1", "--json", tmp_path / "g.json")  # default gates: fp32
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stderr, proc.stderr
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["backend"] == "openvino" and result["videos"] == VIDEOS and result["agreement"] == 100.0


def test_gates_come_from_the_pack_then_the_target(pack, tmp_path):
    own = tmp_path / "pack"
    shutil.copytree(pack, own)
    assert find_gates(None, own, "onnx-cpu")[1].endswith("targets/gates/default.yaml")
    (own / "gates.yaml").write_text("min_agreement: 90\nprecision:\n  int8: {min_agreement: 50}\n")
    gates, source = find_gates(None, own, "onnx-cpu")
    assert source == str(own / "gates.yaml") and gates.for_precision("int8").min_agreement == 50
    assert find_gates(_loose(tmp_path), own, "onnx-cpu")[0].max_top1_drop == 100  # --gates wins


def test_altered_and_missing_chunks_run_the_rest_and_fail(pack, int8, tmp_path):
    bad = tmp_path / "pack"
    shutil.copytree(pack, bad)
    data = bytearray((bad / "chunk-0001.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "chunk-0001.npz").write_bytes(bytes(data))
    with pytest.raises(RunIncomplete, match="chunk-0001.npz does not match its sha256.*7 of 12 videos ran"):
        golden.run_pack(int8.path, bad, gates=_loose(tmp_path), threads=1)
    report = json.loads((int8.path / "report.json").read_text())["golden"]
    assert report["status"] == "failed" and report["videos"] == 7
    assert report["chunks"]["0"] == "ok" and report["chunks"]["1"].startswith("skipped") and report["chunks"]["2"] == "ok"
    (bad / "chunk-0002.npz").unlink()
    with pytest.raises(RunIncomplete, match="2 error"):
        golden.run_pack(int8.path, bad, gates=_loose(tmp_path), threads=1)
    assert json.loads((int8.path / "report.json").read_text())["golden"]["videos"] == 5


def test_an_edited_pack_json_is_refused_before_running(pack, int8, tmp_path):
    bad = tmp_path / "pack"
    shutil.copytree(pack, bad)
    info = json.loads((bad / "pack.json").read_text())
    info["videos"][0]["label"] = (info["videos"][0]["label"] + 1) % 8
    (bad / "pack.json").write_text(json.dumps(info))
    with pytest.raises(PackError, match="does not match its digest"):
        golden.run_pack(int8.path, bad)
    report = json.loads((int8.path / "report.json").read_text())["golden"]
    assert report["status"] == "failed" and report["ran"].startswith("nothing")


def _write(folder, spec, labels, inputs, video_labels=None):
    """A hand-made pack (as another tool, or an older edgevid, could have written it)."""
    video_labels = video_labels or [i % 8 for i in range(len(inputs))]
    return golden.write_pack(folder, hm.TINY, spec, labels, {"source": "random", "sha256": None, "random": True},
                             [(f"v{i}.mp4", label) for i, label in enumerate(video_labels)],
                             lambda i: inputs[i], lambda x: np.zeros((len(x), spec.num_classes), np.float32),
                             chunk_videos=2)


def test_packs_for_another_model_spec_or_label_set_are_refused(pack, int8, tmp_path):
    nan_art = hm.copy(hm.artifact(hm.NAN, "fp32"), tmp_path)
    with pytest.raises(PackError, match="made for model harness_tiny, the artifact is harness_nan"):
        golden.run_pack(nan_art.path, pack)
    spec = get_spec(hm.TINY)
    other = spec.model_copy(update={"clip": spec.clip.model_copy(update={"crop": 40})})
    views = [np.zeros((2, 3, 4, 40, 40), np.float32)] * 3
    with pytest.raises(PackError, match="another harness_tiny spec .*clip"):
        golden.run_pack(int8.path, _write(tmp_path / "crop40", other, int8.labels, views))
    views = [np.zeros((2, 3, 4, 32, 32), np.float32)] * 3
    with pytest.raises(PackError, match="video v2.mp4 has label 9, outside the model's 8 classes"):
        golden.run_pack(int8.path, _write(tmp_path / "label9", spec, int8.labels, views, [0, 1, 9]))


def test_inf_inputs_stop_the_run_with_a_partial_report(tmp_path):
    fp32 = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)  # INT8 would saturate the input at its Q/DQ scale
    spec = get_spec(hm.TINY)
    rng = np.random.default_rng(0)
    views = [rng.standard_normal((2, 3, 4, 32, 32)).astype(np.float32) for _ in range(5)]
    views[3][1] = 3e38  # overflows to Inf in the first convolution
    bad = _write(tmp_path / "inf", spec, fp32.labels, views)
    with pytest.raises(NonFiniteOutput, match="NaN/Inf logits on v3.mp4.*3 of 5 videos ran"):
        golden.run_pack(fp32.path, bad, gates=_loose(tmp_path), threads=1)
    report = json.loads((fp32.path / "report.json").read_text())["golden"]
    assert report["videos"] == 3 and report["chunks"] == {"0": "ok", "1": "stopped: NaN/Inf"}
