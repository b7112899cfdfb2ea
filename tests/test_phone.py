"""Phone path: ExecuTorch BundledProgram export of a golden pack, outputs computed by ExecuTorch's Python
runtime standing in for the phone, scored on the host: the same figures as `golden run` here.

The adb transport itself cannot run here (no phone, no adb): only its missing-adb error is tested.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install 'edgevid[build-executorch]'")

import harness_models as hm  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.harness import golden, phone  # noqa: E402
from edgevid.harness.errors import PackError, RunIncomplete  # noqa: E402
from helpers import assert_one_line_error, run_cli  # noqa: E402

VIDEOS = 6
LOOSE = "max_top1_drop: 100\nmin_agreement: 0\nmin_sqnr_db: 0\n"
FIGURES = ("status", "videos", "top1", "top5", "ref_top1", "agreement", "top1_drop", "cosine", "sqnr_db", "max_abs_diff")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("phone")
    pack = golden.make_pack(hm.TINY, ensure_split("val", VIDEOS), VIDEOS, root / "pack", weights="random",
                            chunk_videos=4, threads=1)
    gates = root / "loose.yaml"
    gates.write_text(LOOSE)
    art = hm.copy(hm.artifact(hm.TINY, "int8", target="android", options={"conv3d_strategy": "taps"}), root)
    host = golden.run_pack(art.path, pack, gates=gates, threads=1)
    bundle = phone.export_bundle(art.path, pack, root / "bundle")
    outputs = phone.run_bundle_here(bundle, root / "outputs")
    return pack, gates, art, host, bundle, outputs


def test_bundle_holds_the_pack_as_executorch_reads_it(setup):
    from executorch.devtools.bundled_program.serialize import deserialize_from_flatbuffer_to_bundled_program

    pack, _, art, _, bundle, _ = setup
    info = json.loads((bundle / phone.INFO_FILE).read_text())
    views = golden.load_pack(pack).info["views_per_video"]
    assert info["batch"] == 1 and len(info["cases"]) == VIDEOS * views
    assert info["pte_sha256"] == art.manifest.files["model.pte"]
    assert (bundle / "model.pte").read_bytes() == art.file("model.pte").read_bytes()
    chunk = golden.load_pack(pack).load_chunk(1)  # videos 4, 5
    case = next(c for c in info["cases"] if c["video"] == 5 and c["first_view"] == 1)
    raw = np.fromfile(bundle / "inputs" / f"case-{case['case']:05d}.bin", dtype=np.float32)
    assert np.array_equal(raw, chunk["inputs"][chunk["video"] == 5][1].ravel())
    schema = deserialize_from_flatbuffer_to_bundled_program((bundle / phone.BUNDLE_FILE).read_bytes())
    (suite,) = schema.method_test_suites
    assert suite.method_name == "forward" and len(suite.test_cases) == len(info["cases"])
    expected = np.frombuffer(suite.test_cases[case["case"]].expected_outputs[0].val.data, dtype=np.float32)
    assert np.array_equal(expected, chunk["ref_logits"][chunk["video"] == 5][1])
    assert schema.program == art.file("model.pte").read_bytes()
    assert "executor_runner" in (bundle / phone.RUN_SCRIPT).read_text()


def test_outputs_from_the_bundle_score_as_golden_run_on_the_host(setup, tmp_path):
    pack, gates, art, host, _, outputs = setup
    scored = phone.score_outputs(art.path, pack, outputs, gates=gates)
    for key in FIGURES:
        assert scored[key] == host[key], key
    assert scored["per_video"] == host["per_video"]
    assert scored["runtime"].startswith("executorch .pte on this host") and host["runtime"].startswith("executorch")
    report = json.loads((art.path / "report.json").read_text())["golden"]
    assert report["runtime"] == scored["runtime"] and report["videos"] == VIDEOS
    print({k: host[k] for k in FIGURES}, "\n", {k: scored[k] for k in FIGURES})


SCORE_WITHOUT_TORCH = """
import atexit, sys
sys.modules["torch"] = None; sys.modules["av"] = None
atexit.register(lambda: print("IMPORTED", sorted({m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
                                                  & {"torch", "av", "executorch"}), file=sys.stderr))
from edgevid.cli import main
sys.argv = ["edgevid", "golden", "score", *sys.argv[1:]]
main()
"""


def test_score_is_torch_free_and_the_cli_prints_the_figures(setup, tmp_path):
    pack, gates, art, host, _, outputs = setup
    proc = subprocess.run([sys.executable, "-c", SCORE_WITHOUT_TORCH, str(art.path), str(pack), "--outputs",
                           str(outputs), "--gates", str(gates), "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stderr, proc.stderr
    assert "runtime: executorch .pte on this host" in proc.stdout
    assert json.loads((tmp_path / "s.json").read_text())["top1"] == host["top1"]


def test_missing_or_foreign_outputs_are_refused(setup, tmp_path):
    pack, gates, art, _, _, outputs = setup
    partial = tmp_path / "outputs"
    shutil.copytree(outputs, partial)
    (partial / "case-00003-0.bin").unlink()  # video 1's second view
    with pytest.raises(RunIncomplete, match="case-00003-0.bin is missing.*5 of 6 videos ran"):
        phone.score_outputs(art.path, pack, partial, gates=gates)
    info = json.loads((partial / phone.INFO_FILE).read_text())
    (partial / phone.INFO_FILE).write_text(json.dumps({**info, "pack_digest": "0" * 64}))
    with pytest.raises(PackError, match="another golden pack"):
        phone.score_outputs(art.path, pack, partial, gates=gates)


def test_export_refuses_other_backends_and_adb_says_what_is_missing(setup, tmp_path):
    pack, _, art, _, _, _ = setup
    onnx = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)
    proc = run_cli("golden", "export", str(onnx.path), str(pack), "--out", str(tmp_path / "b"))
    assert_one_line_error(proc, "onnxruntime artifact", "ExecuTorch artifacts")
    assert not (tmp_path / "b").exists()
    proc = run_cli("golden", "run", str(art.path), str(pack), "--adb", env={"PATH": str(tmp_path)})
    assert_one_line_error(proc, "--adb needs Android's adb on PATH")
