"""`edgevid doctor`: what this machine has, and whether an artifact runs on it (no GPU here: the
TensorRT rows say so; an engine's fingerprint is compared with the machine's)."""

import shutil

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[build]'")

import harness_models as hm  # noqa: E402
from edgevid.artifact import Artifact, finalize_manifest  # noqa: E402
from edgevid.backends import get_backend  # noqa: E402
from edgevid.doctor import artifact_rows, machine_rows  # noqa: E402
from helpers import run_cli  # noqa: E402

BLOCK = "import sys; sys.modules['torch'] = None; sys.modules['av'] = None"


def test_machine_rows_name_every_runtime_without_torch():
    proc = run_cli("doctor", prelude=BLOCK)
    assert proc.returncode == 0, proc.stderr
    for what in ("TensorRT", "CUDA binding", "JetPack", "ONNX Runtime", "OpenVINO", "ExecuTorch", "torch", "PyAV"):
        assert f"│ {what} " in proc.stdout, proc.stdout
    rows, fingerprint = machine_rows()
    if not fingerprint:  # this machine: no TensorRT with a GPU
        assert any(what == "TensorRT" and ok is False for what, _, ok in rows)


@pytest.fixture(scope="module")
def pending():
    if not get_backend("tensorrt").available(for_build=True):
        pytest.skip("the TensorRT host build needs nvidia-modelopt: pip install 'edgevid[build-tensorrt]'")
    return hm.artifact(hm.TINY, "int8", target="jetson")


def test_a_pending_artifact_runs_here_under_onnxruntime_and_its_qdq_onnx_is_checked(pending):
    proc = run_cli("doctor", str(pending.path), prelude=BLOCK)
    assert proc.returncode == 0, proc.stderr
    assert "pending: only the Q/DQ ONNX" in proc.stdout and "--from-onnx" in proc.stdout
    assert "Q/DQ rules of TensorRT 10.3" in proc.stdout


def test_an_engine_is_compared_with_the_machine(pending, tmp_path):
    engine = tmp_path / "engine"
    shutil.copytree(pending.path, engine)
    (engine / "model.plan").write_bytes(b"built on an Orin")
    built = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0", "cuda": "12.6", "jetpack": "6"}
    m = Artifact(engine).manifest
    finalize_manifest(engine, m.model_copy(update={"status": {"engine": "built"}, "fingerprint": built, "files": {}}))
    rows, why = artifact_rows(engine, {**built, "tensorrt": "10.7.0"})  # the same board after a TensorRT upgrade
    assert why and "tensorrt differ" in why and "--from-onnx" in why
    rows, why = artifact_rows(engine, dict(built))
    assert ("fingerprint", "fits", True) in rows
    proc = run_cli("doctor", str(engine), prelude=BLOCK)  # this machine has no TensorRT at all
    assert proc.returncode == 3 and "cannot run here" in proc.stderr and "Traceback" not in proc.stderr
