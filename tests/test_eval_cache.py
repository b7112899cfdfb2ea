"""Eval's FP32 reference cache (computed once per model and video, reused by every later artifact) and
eval's speed figures (videos/s, time shares per stage)."""

import logging
import shutil

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[build]'")

import harness_models as hm  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.harness.eval import STAGES, CountingRunner, evaluate  # noqa: E402
from helpers import run_cli  # noqa: E402

VIDEOS = 6


def figures(result: dict) -> dict:
    """Everything but the run's own account (time, cache): what must not depend on the cache."""
    return {k: v for k, v in result.items() if k not in ("run", "artifact", "artifact_digest", "label", "backend",
                                                         "precision", "runtime")}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private $EDGEVID_HOME (the datasets are made before: their paths are absolute)."""
    monkeypatch.setenv("EDGEVID_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A private copy of a SynthMotion split (tests rewrite its files)."""
    source = ensure_split("val", VIDEOS).parent
    folder = tmp_path_factory.mktemp("data") / "val"
    shutil.copytree(source, folder)
    return folder / "manifest.csv"


def entries(home) -> dict:
    """Every cache entry and its (inode, mtime_ns, size): rewritten files change these."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in (home / "cache" / "reference").rglob("*.npz")}


def test_another_artifact_of_the_model_reuses_the_cached_reference(home, data, tmp_path):
    int8 = hm.copy(hm.artifact(hm.TINY, "int8"), tmp_path / "a")
    fp32 = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path / "b")  # another artifact, the same model and weights

    first = evaluate(int8.path, data, threads=1)
    ref = first["run"]["reference"]
    assert ref["source"] == "computed" and ref["computed_videos"] == VIDEOS and ref["cached_videos"] == 0
    assert ref["forwards"] >= VIDEOS and ref["model_loaded"]
    stored = entries(home)
    assert len(stored) == VIDEOS

    forwards = CountingRunner.total
    second = evaluate(fp32.path, data, threads=1)
    ref = second["run"]["reference"]
    assert ref["source"] == "cache" and ref["cached_videos"] == VIDEOS and ref["computed_videos"] == 0
    assert ref["forwards"] == 0 and not ref["model_loaded"]
    assert CountingRunner.total == forwards  # no reference forward ran in this process
    assert entries(home) == stored  # nothing rewritten
    assert second["run"]["time_s"]["reference"] == 0
    assert "FP32 reference: from the cache" in (fp32.path / "report.md").read_text()

    # the cached reference gives exactly what computing it does
    uncached = evaluate(fp32.path, data, threads=1, reference_cache=False)
    assert uncached["run"]["reference"]["source"] == "computed (cache off)"
    assert uncached["run"]["reference"]["forwards"] >= VIDEOS
    assert figures(uncached) == figures(second)
    assert entries(home) == stored  # the bypass writes nothing either


def test_other_weights_or_a_changed_video_are_computed_again(home, data, tmp_path):
    import torch

    from edgevid.build import build_artifact

    checkpoints = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        checkpoints.append(tmp_path / f"w{seed}.pt")
        torch.save(hm.TinyVideoNet().state_dict(), checkpoints[-1])
    a, b = (build_artifact(hm.TINY, "onnx-cpu", "fp32", weights=str(w), out=tmp_path / w.stem) for w in checkpoints)
    assert evaluate(a.path, data, threads=1)["run"]["reference"]["computed_videos"] == VIDEOS
    other = evaluate(b.path, data, threads=1)["run"]["reference"]
    assert other["computed_videos"] == VIDEOS and other["cached_videos"] == 0  # other weights: nothing reused

    # one video rewritten (another clip's content under its name): only that one is computed again
    videos = sorted(data.parent.glob("*.mp4"))
    replacement = sorted(ensure_split("test", 1).parent.glob("*.mp4"))[0]
    shutil.copyfile(replacement, videos[0])
    again = evaluate(a.path, data, threads=1)
    ref = again["run"]["reference"]
    assert (ref["cached_videos"], ref["computed_videos"]) == (VIDEOS - 1, 1)
    assert figures(again) == figures(evaluate(a.path, data, threads=1, reference_cache=False))


def test_a_damaged_or_mismatching_entry_is_recomputed_with_a_warning(home, data, tmp_path, caplog):
    art = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)
    computed = evaluate(art.path, data, threads=1)
    files = sorted(entries(home))
    files[0].write_bytes(files[0].read_bytes()[:40])  # truncated
    shutil.copyfile(files[2], files[1])  # another video's entry under this video's name
    with caplog.at_level(logging.WARNING, logger="edgevid"):
        again = evaluate(art.path, data, threads=1)
    warnings = [r.getMessage() for r in caplog.records if "reference cache entry" in r.getMessage()]
    assert len(warnings) == 2 and all("\n" not in w and "recomputing it" in w for w in warnings)
    assert any("damaged" in w and str(files[0]) in w for w in warnings)
    assert any("another model key or video" in w and str(files[1]) in w for w in warnings)
    ref = again["run"]["reference"]
    assert (ref["rejected_entries"], ref["computed_videos"], ref["cached_videos"]) == (2, 2, VIDEOS - 2)
    assert figures(again) == figures(computed)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgevid"):
        healed = evaluate(art.path, data, threads=1)["run"]["reference"]
    assert healed["source"] == "cache" and not [r for r in caplog.records if "reference cache" in r.getMessage()]


def test_eval_reports_videos_per_second_and_time_shares(home, data, tmp_path):
    art = hm.copy(hm.artifact(hm.TINY, "int8"), tmp_path)
    serial = evaluate(art.path, data, threads=1, decode_workers=0)
    run = serial["run"]
    assert set(run["time_s"]) == set(STAGES) == set(run["time_shares"]) and run["decode_workers"] == 0
    for stage in ("open", "decode", "preprocess", "inference", "reference", "reference_load", "cache"):
        assert run["time_s"][stage] > 0, stage
    assert sum(run["time_shares"].values()) == pytest.approx(1, abs=1e-3)
    # decoding in turn: the stages and "other" add up to the wall time, and the stages account for most of it
    assert sum(run["time_s"].values()) == pytest.approx(run["seconds"], abs=0.01)
    assert run["time_s"]["other"] < 0.25 * run["seconds"]
    assert run["videos_per_s"] == pytest.approx(VIDEOS / run["seconds"], rel=0.01)

    # decoding ahead on two threads changes nothing but the time
    ahead = evaluate(art.path, data, threads=1, decode_workers=2)
    assert ahead["run"]["decode_workers"] == 2 and figures(ahead) == figures(serial)


def test_decoding_ahead_keeps_the_order_and_stops_cleanly():
    import threading

    from edgevid.harness.eval import prefetched

    started = []

    def load(i):
        started.append(i)
        return i * i

    assert list(prefetched(range(50), load, 3)) == [i * i for i in range(50)]
    started.clear()
    stream = prefetched(range(1000), load, 2)
    assert [next(stream) for _ in range(5)] == [0, 1, 4, 9, 16]
    stream.close()  # what an interrupted eval does: nothing more is loaded
    assert len(started) <= 5 + 3 and not [t for t in threading.enumerate() if t.name.startswith("edgevid-decode")]


def test_cli_prints_the_time_shares_and_bypasses_the_cache(home, data, tmp_path):
    art = hm.copy(hm.artifact(hm.TINY, "int8"), tmp_path)
    prelude = "import sys; sys.path.insert(0, 'tests'); import harness_models"
    env = {"EDGEVID_HOME": str(home)}
    proc = run_cli("eval", str(art.path), "--data", str(data), "--no-reference-cache", env=env, prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    assert "videos/s" in proc.stdout and "decode" in proc.stdout and "inference" in proc.stdout
    assert "FP32 reference: computed (cache off)" in proc.stdout
    assert not entries(home)
    first = run_cli("eval", str(art.path), "--data", str(data), env=env, prelude=prelude)
    second = run_cli("eval", str(art.path), "--data", str(data), env=env, prelude=prelude)
    assert "FP32 reference: computed; " in first.stdout, first.stdout + first.stderr
    assert "FP32 reference: from the cache; 0 reference forwards" in second.stdout, second.stdout + second.stderr
