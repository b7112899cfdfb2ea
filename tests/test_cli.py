"""The CLI end to end, and every bad input of the Foundation issue: one line, non-zero exit, nothing half-written."""

import json

import pytest

from helpers import assert_one_line_error, run_cli


def _row(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if f" {name} " in line)


def test_models_lists_every_registered_variant_with_counts():
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    for name in ("x3d_xs", "x3d_s", "x3d_m", "x3d_l", "x3d_synth"):
        assert name in proc.stdout
    # TubeViT-B: the paper says 90.0 M, the network has 86.55 M (> 1% apart): both are shown
    assert "86.55 (paper 90.00)" in _row(proc.stdout, "tubevit_b")
    # TimeSformer-HR: 122.02 M vs the paper's 121.4 M (0.5%): ours only
    assert "122.02" in _row(proc.stdout, "timesformer_hr") and "paper" not in _row(proc.stdout, "timesformer_hr")


def test_models_without_counting_shows_the_specs_measured_params():
    proc = run_cli("models", "--no-counts")
    assert proc.returncode == 0, proc.stderr
    assert "86.55 (paper 90.00)" in _row(proc.stdout, "tubevit_b")
    assert "3.79" in _row(proc.stdout, "x3d_xs") and "paper" not in _row(proc.stdout, "x3d_xs")


def test_targets_show_backend_status():
    proc = run_cli("targets")
    assert proc.returncode == 0, proc.stderr
    assert "onnx-cpu" in proc.stdout and "installed" in proc.stdout and "jetson" in proc.stdout


def test_build_eval_bench_round_trip(tmp_path):
    out = tmp_path / "art"
    proc = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "fp32", "--weights", "random",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    artifact = out / "x3d_synth-onnx-cpu-fp32"
    assert proc.stdout.strip().endswith(str(artifact))
    assert "random weights" in proc.stderr
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["weights"]["random"] and set(manifest["files"]) == {"model.onnx"}

    val = run_cli("synth", "--split", "val", "--n", "8")
    assert val.returncode == 0, val.stderr
    ev = run_cli("eval", str(artifact), "--data", val.stdout.strip(), "--threads", "1")
    assert ev.returncode == 0, ev.stderr
    report = json.loads((artifact / "report.json").read_text())["eval"]
    assert report["videos"] == 8 and report["agreement"] == 100.0  # FP32 ONNX vs FP32 eager: same predictions

    bench_json = tmp_path / "bench.json"
    bench = run_cli("bench", str(artifact), "--threads", "1", "--seconds", "0.2", "--baseline", "eager", "--json", str(bench_json))
    assert bench.returncode == 0, bench.stderr
    figures = json.loads(bench_json.read_text())
    run = figures["runs"]["artifact"]
    assert run["p50_ms"] > 0 and run["peak_rss_mb"] > 0 and figures["runs"]["eager"]["p50_ms"] > 0
    assert run["speedup_vs_eager"] > 0
    rep = run_cli("report", str(out))
    assert rep.returncode == 0 and "x3d_synth-onnx-cpu-fp32" in rep.stdout
    assert (out / "report.md").is_file()


@pytest.mark.parametrize("args,fragments", [
    (["build", "--model", "x3d_smal", "--target", "onnx-cpu"], ["unknown model 'x3d_smal'", "Did you mean", "x3d_s"]),
    (["build", "--model", "x3d_s", "--target", "jetsn"], ["unknown target 'jetsn'", "jetson"]),
    (["build", "--model", "x3d_s", "--target", "onnx-cpu", "--precision", "fp16"], ["--precision fp16", "onnx-cpu"]),
    (["build", "--model", "x3d_s", "--target", "onnx-cpu", "--weights", "/nonexistent/x3d.pyth"], ["--weights", "no such file"]),
    (["build", "--model", "x3d_s", "--target", "onnx-cpu"], ["no weights for x3d_s", "dl.fbaipublicfiles.com", "--weights random"]),
    (["build", "--model", "x3d_s", "--target", "onnx-cpu", "--weights", "random"], ["trained on kinetics400", "--calib"]),
])
def test_bad_build_input(args, fragments, tmp_path):
    proc = run_cli(*args, "--out", str(tmp_path / "out"), env={"EDGEVID_HOME": str(tmp_path / "home")})
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "x3d_xs.pyth"
    bad.write_bytes(b"\x80\x02not a checkpoint")
    proc = run_cli("build", "--model", "x3d_xs", "--target", "onnx-cpu", "--precision", "fp32", "--weights", str(bad),
                   "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "cannot read checkpoint", str(bad))
    assert not (tmp_path / "out").exists()


def test_mismatched_checkpoint(tmp_path):
    import torch

    from edgevid.models import create_model

    path = tmp_path / "synth_as_xs.pt"
    torch.save(create_model("x3d_synth").state_dict(), path)
    proc = run_cli("build", "--model", "x3d_xs", "--target", "onnx-cpu", "--precision", "fp32", "--weights", str(path),
                   "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "does not fit the model", "missing")


def test_calibration_folder_without_usable_clips(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.mp4").write_bytes(b"not a video")
    proc = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "int8", "--weights", "random",
                   "--calib", str(calib), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, f"--calib {calib}", "could be decoded")
    assert not (tmp_path / "out").exists()


def test_empty_calibration_folder(tmp_path):
    proc = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "int8", "--weights", "random",
                   "--calib", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "has no videos")


def test_output_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "fp32", "--weights", "random",
                   "--out", str(blocker / "out"))
    assert_one_line_error(proc, "pass a writable --out")


def test_backend_not_installed(tmp_path):
    proc = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "fp32", "--weights", "random",
                   "--out", str(tmp_path / "out"), prelude="import sys; sys.modules['onnxruntime'] = None")
    assert_one_line_error(proc, "backend onnxruntime needs onnxruntime", "pip install 'edgevid[build]'")


def test_targets_print_the_extra_in_brackets_and_tensorrt_truthfully():
    proc = run_cli("targets", prelude="import sys; sys.modules['tensorrt'] = None; sys.modules['pycuda'] = None")
    assert proc.returncode == 0, proc.stderr
    jetson = next(line for line in proc.stdout.splitlines() if line.startswith("│ jetson-orin"))
    assert "pip install 'edgevid[tensorrt]'" in jetson  # rich markup used to eat "[tensorrt]"
    assert "missing tensorrt, pycuda" in jetson and "│ installed" not in jetson


@pytest.mark.parametrize("args, blocked, fragments", [
    (("models",), "torch", ("edgevid models needs torch==2.13.0", "pip install 'edgevid[build]'")),
    (("golden", "make", "--model", "x3d_synth", "--data", "x.csv", "--clips", "2", "--out", "p"), "torch",
     ("edgevid golden make needs torch==2.13.0", "pip install 'edgevid[build]'")),
    (("synth", "--n", "2"), "av", ("needs av (PyAV)", "pip install 'edgevid[video]'")),
])
def test_host_commands_without_their_extra_are_one_line(args, blocked, fragments, tmp_path):
    proc = run_cli(*args, prelude=f"import sys; sys.modules[{blocked!r}] = None", env={"EDGEVID_HOME": str(tmp_path)})
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc, *fragments)


def test_eval_without_pyav_or_torch_is_one_line_before_anything_runs(tmp_path):
    build = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "fp32", "--weights", "random",
                    "--out", str(tmp_path))
    assert build.returncode == 0, build.stderr
    artifact = tmp_path / "x3d_synth-onnx-cpu-fp32"
    csv = tmp_path / "v.csv"
    csv.write_text("path,label\nclip.mp4,move_left\n")
    proc = run_cli("eval", str(artifact), "--data", str(csv), "--no-reference", "--json", str(tmp_path / "e.json"),
                   prelude="import sys; sys.modules['av'] = None")
    assert proc.returncode == 3  # not 1, the code of a gate failure
    assert_one_line_error(proc, "edgevid eval (decoding the videos) needs av (PyAV)", "pip install 'edgevid[video]'")
    proc = run_cli("eval", str(artifact), "--data", str(csv), prelude="import sys; sys.modules['torch'] = None")
    assert_one_line_error(proc, "FP32 reference needs torch==2.13.0", "pip install 'edgevid[build]'", "--no-reference")
    assert not (artifact / "report.json").exists()


def test_eval_with_missing_and_corrupt_videos(tmp_path):
    build = run_cli("build", "--model", "x3d_synth", "--target", "torch-cpu", "--weights", "random", "--out", str(tmp_path))
    assert build.returncode == 0, build.stderr
    artifact = tmp_path / "x3d_synth-torch-cpu-fp32"
    csv = tmp_path / "data.csv"
    csv.write_text("path,label\nmissing.mp4,move_left\n")
    assert_one_line_error(run_cli("eval", str(artifact), "--data", str(csv)), "missing.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"garbage")
    csv.write_text("path,label\ncorrupt.mp4,move_left\n")
    assert_one_line_error(run_cli("eval", str(artifact), "--data", str(csv)), "corrupt.mp4")
    # the error counts videos, and --json is written on failure too (the partial report)
    from edgevid.data.synthmotion import ensure_split

    good = ensure_split("val", 2)
    rows = [line for line in open(good).read().splitlines()[1:]]
    base = __import__("pathlib").Path(good).parent
    csv.write_text("path,label\n" + "".join(f"{base / r.split(',')[0]},{r.split(',')[1]}\n" for r in rows)
                   + f"{tmp_path / 'corrupt.mp4'},move_left\n")
    proc = run_cli("eval", str(artifact), "--data", str(csv), "--json", str(tmp_path / "e.json"))
    assert_one_line_error(proc, "1 of 3 video(s) could not be evaluated", "corrupt.mp4")
    written = json.loads((tmp_path / "e.json").read_text())
    assert written["status"] == "failed" and written["videos"] == 2 and len(written["errors"]) == 1


def test_tampered_artifact_is_refused(tmp_path):
    build = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--precision", "fp32", "--weights", "random",
                    "--out", str(tmp_path))
    assert build.returncode == 0, build.stderr
    artifact = tmp_path / "x3d_synth-onnx-cpu-fp32"
    with open(artifact / "model.onnx", "ab") as handle:
        handle.write(b"tamper")
    assert_one_line_error(run_cli("bench", str(artifact), "--seconds", "0.1"), "does not match its sha256", "edgevid build")


def test_build_shows_each_stage_with_its_count_and_seconds(tmp_path):
    """Piped stderr (CI logs): one line per finished stage, calibration as n/N; the manifest has the seconds."""
    proc = run_cli("build", "--model", "x3d_synth", "--target", "onnx-cpu", "--weights", "random", "--calib", "synthetic",
                   "--calib-size", "4", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("build: ")]
    # X3D quantizes with NNCF: statistics and Q/DQ insertion are one call, the calibration stage
    assert [line.split(" ")[1] for line in lines] == ["calibration", "export", "calibration"], lines
    assert lines[0].startswith("build: calibration data 4/4 ") and lines[2].startswith("build: calibration 4/4 ")
    assert all(line.endswith(" s") for line in lines)
    manifest = json.loads((tmp_path / "x3d_synth-onnx-cpu-int8" / "manifest.json").read_text())
    assert list(manifest["stage_seconds"]) == ["calibration data", "export", "calibration"]
    assert "stages: calibration data" in proc.stderr


def test_build_progress_on_a_terminal_keeps_a_line_per_stage():
    import io

    from rich.console import Console

    from edgevid.cli import BuildProgress
    from edgevid.stages import BuildStages

    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=120)
    with BuildProgress(console) as progress:
        stages = BuildStages(progress)
        with stages.stage("export"):
            pass
        for _ in stages.track(range(3), "calibration"):
            pass
        task = {t.description: t for t in progress.progress.tasks}
    assert set(task) == {"export", "calibration"}
    assert task["calibration"].completed == 3 and task["calibration"].fields["count"] == "3/3"
    assert all(t.finished for t in task.values())
    assert "calibration" in sink.getvalue() and "3/3" in sink.getvalue()
