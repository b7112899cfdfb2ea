import json

import pytest

from edgevid.artifact import Artifact, Manifest, WeightsInfo, finalize_manifest, staging_dir
from edgevid.errors import ArtifactError, EdgevidError
from edgevid.spec import KINETICS_NORM, ClipSpec, ModelSpec

SPEC = ModelSpec(name="m", family="x3d", clip=ClipSpec(frames=4, stride=2, crop=32, short_side=32), norm=KINETICS_NORM,
                 num_classes=3, label_set="synthmotion")


def _manifest() -> Manifest:
    return Manifest(model="m", spec=SPEC, labels=["a", "b", "c"], target="onnx-cpu", backend="onnxruntime",
                    device="cpu", precision="fp32", weights=WeightsInfo(source="random", random=True),
                    input_shape=[1, 3, 4, 32, 32])


def _make(tmp_path, name="art"):
    final = tmp_path / name
    with staging_dir(final) as tmp:
        (tmp / "model.onnx").write_bytes(b"model-bytes")
        finalize_manifest(tmp, _manifest())
    return final


def test_artifact_is_written_atomically_and_verifies(tmp_path):
    final = _make(tmp_path)
    art = Artifact(final)
    assert set(art.manifest.files) == {"model.onnx"}
    art.verify()
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temp folders left behind


def test_failed_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with staging_dir(tmp_path / "art") as tmp:
            (tmp / "model.onnx").write_bytes(b"half")
            raise RuntimeError("backend crashed")
    assert list(tmp_path.iterdir()) == []


def test_failed_rebuild_keeps_previous_artifact(tmp_path):
    final = _make(tmp_path)
    with pytest.raises(RuntimeError):
        with staging_dir(final):
            raise RuntimeError("boom")
    Artifact(final).verify()


def test_tampered_and_missing_files_are_refused(tmp_path):
    final = _make(tmp_path)
    (final / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        Artifact(final).verify()
    (final / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Artifact(final).verify()


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not an edgevid artifact"):
        Artifact(tmp_path)


def test_report_updates_do_not_break_hashes(tmp_path):
    art = Artifact(_make(tmp_path))
    art.update_report("eval", {"top1": 1.0})
    art.update_report("bench", {"p50": 2.0})
    assert json.loads((art.path / "report.json").read_text()) == {"eval": {"top1": 1.0}, "bench": {"p50": 2.0}}
    art.verify()


def test_unwritable_output_is_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # works as root too, unlike chmod
    with pytest.raises(EdgevidError, match="pass a writable --out"):
        with staging_dir(blocker / "art"):
            pass
