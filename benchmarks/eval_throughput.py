"""`edgevid eval` throughput: videos/s and where the time goes, with the FP32 reference computed and cached.

    python benchmarks/eval_throughput.py [--threads 2] [--clips 200] [--files 50]

On an ``x3d_synth`` OpenVINO INT8 artifact (built once with the plain ``edgevid build --target
intel-cpu --model x3d_synth --weights reference --precision int8 --calib synthetic``, kept under
``$EDGEVID_HOME/bench/eval-throughput``), each dataset is evaluated twice with the real CLI
(``edgevid eval ART --data D --threads N --restart --json``, no pinning: both cores):

1. the first run, the reference cache emptied: the FP32 reference is computed (and stored);
2. the second run: the reference comes from the cache (no reference forward);
3. the same with ``--decode-workers 0`` (each video decoded in turn, no overlap): what decoding ahead
   on two threads is worth;
4. a first run again (cache emptied) with ``--threads 1``: on a machine where another process holds a
   core, PyTorch's two-thread forwards wait for a time slice on the busy core at every parallel
   region, and one thread is the faster reference (decoding still runs on two threads).

Datasets: ``--clips`` SynthMotion val clips (32 frames, 160x128, 15 fps), and ``--files`` ten-second
30 fps 340x256 H.264 files (SynthMotion motion rendered at 30 fps, the clip's own motion centred on
the middle of the file, where eval's one test view is; written once with
``edgevid.data.video.write_video`` under ``$EDGEVID_HOME/bench``). The eval runs use a private
``EDGEVID_HOME`` (``.../eval-throughput/home``) whose reference cache is emptied before each first run
and whose OpenVINO compile cache is kept.

Reported per run: videos/s (videos / eval's wall seconds), seconds and share per stage (``open`` the
artifact, ``decode``, ``preprocess``, ``inference``, FP32 ``reference``, ``reference_load``, reference
``cache``, ``other``; decode and preprocess are summed over the decode threads, so with decoding ahead
the stages add up to more than the wall time), top-1, agreement, where the reference came from, the
load average. Results go to
``benchmarks/results/eval_throughput.json`` and ``.md`` with the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODEL, TARGET = "x3d_synth", "intel-cpu"
STAGES = ("open", "decode", "preprocess", "inference", "reference", "reference_load", "cache", "other")
# (label, the reference cache emptied first, runner threads: None = --threads, extra eval arguments)
RUNS = (("first (reference computed)", True, None, []), ("second (reference cached)", False, None, []),
        ("cached, decoding in turn", False, None, ["--decode-workers", "0"]),
        ("first, --threads 1 (reference computed)", True, 1, []))


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def long_files(count: int, seconds: float = 10.0, fps: int = 30, size: tuple[int, int] = (256, 340)) -> Path:
    """A cached folder of ``count`` ten-second 30 fps 340x256 H.264 files and their manifest.csv."""
    from edgevid.data import synthmotion as sm
    from edgevid.data.transforms import resize
    from edgevid.data.video import write_video
    from edgevid.paths import edgevid_home

    folder = edgevid_home() / "bench" / f"eval-{size[1]}x{size[0]}-{seconds:g}s-{fps}fps-{count}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = ["path,label"]
    frames = int(seconds * fps)
    for seed in sm.split_seeds("val", count):
        # the clip's middle (frame sm.MIDDLE at 15 fps) falls on the file's middle, where the test view is
        times = np.arange(frames) / fps - seconds / 2 + sm.MIDDLE / sm.FPS
        clip = sm.render_clip(seed, times=times)
        write_video(tmp / f"{seed}.mp4", resize(clip.frames, *size), fps)
        rows.append(f"{seed}.mp4,{sm.CLASSES[clip.label]}")
    (tmp / "manifest.csv").write_text("\n".join(rows) + "\n")
    (tmp / "classes.txt").write_text("\n".join(sm.CLASSES) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return manifest


def artifact(work: Path) -> Path:
    """The x3d_synth OpenVINO INT8 artifact, built with the plain CLI unless a current one is there."""
    from edgevid.artifact import artifact_name
    from edgevid.pipeline import stale_reason
    from edgevid.targets import get_target

    path = work / artifact_name(MODEL, get_target(TARGET).name, "int8")
    if path.is_dir() and stale_reason(path, MODEL, get_target(TARGET), "reference", "synthetic", None) is None:
        return path
    cmd = [sys.executable, "-m", "edgevid", "build", "--target", TARGET, "--model", MODEL, "--weights", "reference",
           "--precision", "int8", "--calib", "synthetic", "--out", str(work)]
    print("$ " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    print(f"built in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return path


def eval_run(art: Path, data: Path, threads: int, home: Path, out: Path, extra: list[str]) -> dict:
    """One `edgevid eval` in a subprocess; its --json result plus what it printed."""
    cmd = [sys.executable, "-m", "edgevid", "eval", str(art), "--data", str(data), "--threads", str(threads),
           "--restart", "--json", str(out), *extra]
    load = _load()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO), EDGEVID_HOME=str(home)))
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"edgevid eval failed:\n{proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    run = result["run"]
    return {"videos": result["videos"], "top1": result["top1"], "agreement": result.get("agreement"),
            "process_s": round(wall, 2), "seconds": run["seconds"], "videos_per_s": run["videos_per_s"],
            "time_s": run["time_s"], "time_shares": run["time_shares"], "reference": run.get("reference"),
            "threads": threads, "decode_workers": run.get("decode_workers"), "runtime": result.get("runtime"), "command": " ".join(cmd[2:]),
            "load_before": load, "load_after": _load(),
            "console": proc.stdout.strip().splitlines()[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=int, default=200, help="SynthMotion val clips")
    parser.add_argument("--files", type=int, default=50, help="ten-second 30 fps 340x256 files")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_throughput.json")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the existing .json, run nothing")
    args = parser.parse_args()
    if args.markdown_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    sys.path.insert(0, str(REPO))
    from importlib import metadata

    from edgevid import __version__
    from edgevid.bench import machine_info
    from edgevid.data.synthmotion import ensure_split
    from edgevid.paths import edgevid_home

    work = edgevid_home() / "bench" / "eval-throughput"
    home = work / "home"
    art = artifact(work)
    datasets = {f"SynthMotion val, {args.clips} clips (32 frames 160x128 15 fps)": ensure_split("val", args.clips),
                f"{args.files} files of 10 s, 30 fps, 340x256 H.264": long_files(args.files)}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "not a git checkout"
    versions = {"edgevid": __version__}
    for name in ("openvino", "torch", "av", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    result = {"machine": machine_info(), "versions": versions, "commit": commit, "threads": args.threads,
              "artifact": art.name, "datasets": {}}
    for name, data in datasets.items():
        runs = {}
        for label, empty, threads, extra in RUNS:
            if empty:  # this run computes the reference
                shutil.rmtree(home / "cache" / "reference", ignore_errors=True)
            runs[label] = eval_run(art, data, threads or args.threads, home, work / "eval.json", extra)
            print(json.dumps({"dataset": name, "run": label, **{k: runs[label][k] for k in
                              ("videos", "videos_per_s", "seconds", "time_shares")}}), flush=True)
        result["datasets"][name] = {"data": str(data), "runs": runs}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    m, v = result["machine"], result["versions"]
    lines = ["## `edgevid eval` throughput: x3d_synth OpenVINO INT8, reference computed vs cached", "",
             f"`python benchmarks/eval_throughput.py` on {m.get('cpu')} ({m.get('usable_cores')} usable cores,"
             f" {' '.join(m.get('isa', []))}, {m.get('memory_gb')} GB), `edgevid eval --threads {result['threads']}`"
             f" (the last run per dataset `--threads 1`), no pinning; edgevid {v.get('edgevid')} ({result['commit']}), OpenVINO {v.get('openvino')}, torch"
             f" {v.get('torch')}, PyAV {v.get('av')}, Python {m.get('python')}. The machine is shared (a training job"
             " holds one core): the load average is given per run.", "",
             "Shares are of the summed stage seconds (open the artifact, decode = open + demux + decode + convert/scale"
             " in FFmpeg, preprocess = sampling plan + crop + normalise, inference = the artifact, reference = FP32"
             " PyTorch forwards, ref. load = checking the checkpoint + importing torch + building the reference model,"
             " cache = hashing videos + reading/writing entries, other = the rest of the wall time); decode and"
             " preprocess are summed over the decode threads.", "",
             "| dataset | run | threads | decode threads | videos | videos/s | eval s | open | decode | preprocess | inference |"
             " FP32 reference | ref. load | cache | other | reference from | top-1 | agreement | load before |",
             "|" + "---|" * 19]
    for name, entry in result["datasets"].items():
        for label, run in entry["runs"].items():
            shares = [f"{100 * run['time_shares'].get(s, 0):.1f}%" for s in STAGES]
            ref = run.get("reference") or {}
            source = ref.get("source", "-") + (f", {ref.get('forwards')} forwards" if ref else "")
            lines.append(f"| {name} | {label} | {run['threads']} | {run['decode_workers']} | {run['videos']} | {run['videos_per_s']} | {run['seconds']} | "
                         + " | ".join(shares) + f" | {source} | {run['top1']:.1f} | {run['agreement']:.1f} |"
                         f" {run['load_before']} |")
    lines += ["", *_notes(result), "", "Seconds per stage:", "", "| dataset | run | " + " | ".join(STAGES) + " |",
              "|---|---|" + "---|" * len(STAGES)]
    for name, entry in result["datasets"].items():
        for label, run in entry["runs"].items():
            lines.append(f"| {name} | {label} | " + " | ".join(f"{run['time_s'].get(s, 0):.2f}" for s in STAGES) + " |")
    return "\n".join(lines) + "\n"


def _notes(result: dict) -> list[str]:
    """What the figures say, computed from them: the cache's gain, decoding ahead, the threads' effect."""
    notes = []
    for name, entry in result["datasets"].items():
        runs = list(entry["runs"].values())
        first, cached, in_turn, first_1 = runs[:4]
        per_forward = [r["time_s"]["reference"] / max(1, r["reference"]["forwards"]) * 1000 for r in (first, first_1)]
        notes.append(f"- {name}: the cached reference gives {cached['videos_per_s'] / first_1['videos_per_s']:.1f}x the"
                     f" videos/s of the best first run ({cached['videos_per_s']} vs {first_1['videos_per_s']}); decoding"
                     f" ahead on two threads {cached['videos_per_s'] / in_turn['videos_per_s']:.2f}x decoding in turn;"
                     f" FP32 reference {per_forward[0]:.0f} ms per forward at {first['threads']} threads vs"
                     f" {per_forward[1]:.0f} ms at 1 (load {first['load_before'].split()[0]}).")
    notes.append("- Where the two-thread reference is many times slower than the one-thread one, PyTorch's forwards"
                 " stall at every parallel region while another process holds one of the cores (this shared"
                 " machine): the one-thread first run is the figure to compare with the cached one here.")
    return notes


if __name__ == "__main__":
    main()
