"""edgevid bench: statistics, the machine's measured peak, `--all-targets` end to end (builds what is
missing, one table, JSON + Markdown), and bad input. Speed itself is measured by `make bench`."""

import json
import math
import os
import time

import numpy as np
import pytest

from edgevid.bench import host_targets, machine_info, measure_peak, median_ci_pct, summarize, time_callable
from helpers import assert_one_line_error, run_cli


def test_summarize_drops_slow_outliers_and_orders_percentiles():
    rng = np.random.default_rng(0)
    samples = list(10 + rng.normal(0, 0.1, 200)) + [50.0, 80.0]  # two preempted runs
    timing = summarize(samples)
    assert timing.outliers_dropped == 2 and timing.runs == 200
    assert timing.min_ms <= timing.p50_ms <= timing.p90_ms <= timing.p99_ms < 11
    assert timing.p50_ms == pytest.approx(10, abs=0.05) and timing.mean_ms == pytest.approx(10, abs=0.05)
    assert timing.median_ci_pct < 1
    with pytest.raises(ValueError):
        summarize([])


def test_median_confidence_interval():
    assert median_ci_pct(np.full(50, 5.0)) == 0
    assert math.isinf(median_ci_pct(np.array([1.0, 2.0])))
    wide = median_ci_pct(np.random.default_rng(1).uniform(5, 15, 30))
    narrow = median_ci_pct(np.random.default_rng(1).uniform(9.9, 10.1, 30))
    assert narrow < 1 < wide


def test_time_callable_runs_at_least_min_runs_after_warmup():
    calls = []
    timing = time_callable(lambda: calls.append(1), warmup=3, min_runs=12, min_seconds=0.01)
    assert timing.runs + timing.outliers_dropped >= 12 and len(calls) >= 15


def test_machine_info_names_cpu_cores_and_isa():
    info = machine_info()
    assert info["cores"] >= 1 and info["usable_cores"] >= 1 and isinstance(info["isa"], list) and info["cpu"]


@pytest.mark.parametrize("precision,op", [("fp32", "MatMul"), ("int8", "MatMulInteger")])
def test_measured_peak(precision, op):
    pytest.importorskip("onnxruntime", reason="the GEMM peak is measured with ONNX Runtime")
    peak = measure_peak(precision, threads=1, seconds=0.2)
    assert peak["gops"] > 0 and op in peak["method"] and peak["precision"] == precision


def test_host_targets_keep_cpu_targets_and_say_why_others_are_skipped():
    chosen, skipped = host_targets()
    names = {t.name for t in chosen}
    assert {"torch-cpu", "onnx-cpu"} <= names
    reasons = dict(skipped)
    for gpu_target in ("jetson-orin", "rtx"):
        assert gpu_target in reasons and "cuda" in reasons[gpu_target]
    assert all(t.device.lower() in ("cpu", "xnnpack") or t.backend == "openvino" for t in chosen)


def test_all_targets_builds_missing_artifacts_and_prints_one_table(tmp_path):
    out = tmp_path / "art"
    json_path, md_path = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = run_cli("bench", "--all-targets", "--model", "x3d_synth", "--target", "torch-cpu", "--target", "onnx-cpu",
                   "--precision", "fp32", "--weights", "random", "--out", str(out), "--threads", "1", "--seconds", "0.2",
                   "--baseline", "eager", "--json", str(json_path), "--md", str(md_path), timeout=1800)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(json_path.read_text())
    names = sorted(a["target"] for a in result["artifacts"])
    assert names == ["onnx-cpu", "torch-cpu"] and all(a["built_now"] for a in result["artifacts"])
    assert result["gflops_per_clip"] > 0 and result["peaks"]["fp32"]["gops"] > 0
    for entry in result["artifacts"]:
        run = entry["runs"]["artifact"]
        assert run["p50_ms"] > 0 and run["p99_ms"] >= run["p50_ms"] and run["peak_rss_mb"] > 0
        assert run["e2e"]["p50_ms"] > 0 and run["e2e"]["clips_per_s"] > 0 and run["e2e_vs_model"] > 0
        overlapped = run["e2e_overlapped"]
        assert overlapped["clips"] >= 12 and overlapped["clips_per_s"] > 0 and 0 <= overlapped["queue_wait_share"] <= 1
        assert overlapped["produce_ms"] > 0 and overlapped["vs_model"] > 0
        assert run["speedup_vs_eager"] > 0 and 0 < run["pct_of_peak"] and run["achieved_gops"] > 0
        assert (out / f"x3d_synth-{entry['target']}-fp32" / "report.json").is_file()
    assert result["baselines"]["eager"]["p50_ms"] > 0
    assert result["machine"]["cores"] >= 1 and "torch" in result["runtime_versions"]
    for text in (proc.stdout, md_path.read_text()):
        assert "x3d_synth-onnx-cpu-fp32" in text and "x3d_synth-torch-cpu-fp32" in text and "eager" in text
    assert "peak fp32" in md_path.read_text() and "| run |" in md_path.read_text()

    # a second run finds the artifacts and builds nothing
    from edgevid.bench import ensure_artifact
    from edgevid.targets import get_target

    path, built = ensure_artifact("x3d_synth", get_target("onnx-cpu"), "fp32", out, "random", None, None, False)
    assert not built and path == out / "x3d_synth-onnx-cpu-fp32"


def test_overlapped_throughput_counts_every_clip_and_surfaces_a_failing_decoder():
    from edgevid.bench import overlapped_throughput

    seen = []
    result = overlapped_throughput(lambda: np.ones(3), seen.append, min_seconds=0.05, model_ms=1.0, min_clips=20)
    assert result["clips"] >= 20 and len(seen) == result["clips"] + 3  # + the warm-up clips that fill the queue

    def broken():
        raise OSError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        overlapped_throughput(broken, seen.append, min_seconds=0.05, model_ms=1.0)


def test_decode_process_hands_over_through_shared_memory_the_clips_bench_decodes():
    """The overlapped run's decode process writes each clip into a shared-memory slot: every clip
    the runner sees is the one ``single_clip`` decodes, and the clips that can be alive at once (two
    decoding, two queued, one held, one inferred) lie in distinct slots."""
    from edgevid.bench import _overlapped_from_decode_process, e2e_video
    from edgevid.data.views import single_clip
    from edgevid.models import get_spec

    spec = get_spec("x3d_synth")
    video = e2e_video(spec)
    expected = single_clip(video, spec, threads=1)
    seen, names = [], []
    rings = lambda: {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}  # noqa: E731
    before = rings()

    def runner(clip):
        names.append(clip.__array_interface__["data"][0])  # where in the ring it lies (a view, not a copy)
        time.sleep(0.002)  # a slow model: the ring fills, the slots get reused
        seen.append(bool(np.array_equal(clip, expected)))

    result = _overlapped_from_decode_process(str(video), spec, expected.shape, runner, min_seconds=0.05, model_ms=2.0)
    assert result["clips"] >= 12 and len(seen) >= 12 + 3 and all(seen)
    assert all(len(set(names[i:i + 6])) == len(names[i:i + 6]) for i in range(len(names)))
    assert rings() == before  # the ring is unlinked


@pytest.mark.parametrize("args,fragments", [
    (["bench"], ["pass an ARTIFACT folder", "--all-targets --model"]),
    (["bench", "--all-targets"], ["--all-targets needs --model"]),
    (["bench", "--all-targets", "--model", "x3d_synth", "--target", "jetsn"], ["unknown target 'jetsn'"]),
])
def test_bad_bench_input(args, fragments):
    assert_one_line_error(run_cli(*args), *fragments)


def test_unknown_baseline_is_a_one_line_error(tmp_path):
    build = run_cli("build", "--model", "x3d_synth", "--target", "torch-cpu", "--weights", "random", "--out", str(tmp_path))
    assert build.returncode == 0, build.stderr
    proc = run_cli("bench", str(tmp_path / "x3d_synth-torch-cpu-fp32"), "--baseline", "tensorflow")
    assert_one_line_error(proc, "--baseline tensorflow", "eager or compile")


@pytest.mark.slow
def test_compile_baseline(tmp_path):
    """torch.compile FP32 beside eager (slow: inductor compiles C++ on the first call)."""
    from edgevid.bench import bench_artifact
    from edgevid.build import build_artifact

    artifact = build_artifact("x3d_synth", "torch-cpu", weights="random", out=tmp_path)
    result = bench_artifact(artifact.path, threads=2, baselines=("eager", "compile"), min_seconds=1.0)
    assert result["runs"]["compile"]["p50_ms"] > 0 and result["runs"]["artifact"]["speedup_vs_compile"] > 0
