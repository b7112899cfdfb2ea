"""Wall time of `edgevid build` per model and target, with the manifest's per-stage seconds.

    python benchmarks/build_time.py --label after                       # X3D-S INT8 on the four CPU-side targets
    python benchmarks/build_time.py --cases uniformerv2_b16:jetson --label after --core 1
    python benchmarks/build_time.py --code /tmp/edgevid-main --label before   # another checkout's edgevid

Targets (issue 20): X3D-S INT8 <= 120 s on onnx-cpu, intel-cpu, android and the TensorRT Q/DQ stage
(jetson: stops after the Q/DQ ONNX without TensorRT); UniFormerV2-B/16 INT8 <= 600 s on each. Every
build is the plain command a user types (random weights, --calib synthetic, default calibration
size unless ``--calib-size``), run in its own process pinned with ``taskset`` to ``--core`` and
with one BLAS/OpenMP thread (``--core -1``: unpinned, default threads, as a user runs it). The machine is shared: the load average before/after each build and
the busiest other processes are recorded with the figures. ``--cold`` gives each build a fresh
EDGEVID_HOME (no ExecuTorch strategy cache; the SynthMotion clips are copied in so only the
cache differs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ("x3d_s:onnx-cpu", "x3d_s:intel-cpu", "x3d_s:android", "x3d_s:jetson")
GOALS = {"x3d_s": 120.0, "uniformerv2_b16": 600.0}


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _others(limit: int = 5) -> list[str]:
    """The busiest processes that are not this benchmark (what shared the machine)."""
    out = subprocess.run(["ps", "-eo", "pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    rows = [line.strip() for line in out.splitlines()[1:] if "build_time.py" not in line and "edgevid build" not in line]
    return [row[:160] for row in rows[:limit]]


def run_case(model: str, target: str, args, home: Path | None) -> dict:
    """One `edgevid build`, timed from outside, and what its manifest says."""
    with tempfile.TemporaryDirectory(prefix="edgevid-build-time-") as tmp:
        cmd = [sys.executable, "-m", "edgevid", "build", "--model", model, "--target", target, "--precision", "int8",
               "--weights", "random", "--calib", "synthetic", "--out", tmp]
        if args.calib_size:
            cmd += ["--calib-size", str(args.calib_size)]
        for option in args.option:
            cmd += ["--option", option]
        env = dict(os.environ, PYTHONPATH=str(args.code))
        if args.core is not None:  # pinned: one thread for the one core; unpinned: the threads a user's build gets
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if home is not None:
            env["EDGEVID_HOME"] = str(home)
        if args.core is not None:
            cmd = ["taskset", "-c", str(args.core), *cmd]
        load_before, others = _load(), _others()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=args.code)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        row = {"model": model, "target": target, "command": " ".join(cmd[cmd.index("-m") + 1:]),
               "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "returncode": proc.returncode,
               "load_before": load_before, "load_after": _load(), "others": others}
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:400]
            return row
        folder = Path(proc.stdout.strip().splitlines()[-1])
        manifest = json.loads((folder / "manifest.json").read_text())
        row.update(build_seconds=manifest.get("build_seconds"), stage_seconds=manifest.get("stage_seconds"),
                   calibration_clips=(manifest.get("calibration") or {}).get("clips"),
                   versions=manifest.get("versions"))
        if args.keep_logs:
            dest = Path(args.keep_logs) / f"{args.label}-{model}-{target}.build.log"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / "build.log", dest)
        strategy = folder / "delegation.json"
        if strategy.is_file():
            decisions = json.loads(strategy.read_text()).get("strategy_decisions", [])
            row["strategy_cache"] = {"hits": sum(d["cached"] for d in decisions),
                                     "measured": sum(not d["cached"] for d in decisions)}
        return row


def _cold_home() -> Path:
    """A fresh EDGEVID_HOME holding only the generated SynthMotion clips of the current one."""
    from edgevid.paths import edgevid_home

    home = Path(tempfile.mkdtemp(prefix="edgevid-cold-home-"))
    datasets = edgevid_home() / "datasets"
    if datasets.is_dir():
        os.symlink(datasets, home / "datasets")
    return home


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"## `edgevid build` wall time: {result['label']}",
             "",
             f"{m.get('cpu')} ({m.get('cores')} cores, {' '.join(m.get('isa', []))}); "
             + (f"each build pinned to core {result['core']} with OMP_NUM_THREADS=1 (`taskset`)" if result["core"] is not None
                else "each build unpinned, default threads (every core)")
             + f"; wall s is what the user waits, cpu s the build's own user+sys CPU time (the share of the machine it got is cpu/wall), code: `{result['code']}` ({result['commit']}),"
             f" EDGEVID_HOME {'fresh per build (cold strategy cache)' if result['cold'] else 'the shared one'}."
             " The machine is shared: load average and the busiest other processes are listed per build.",
             "",
             "| model | target | calib clips | wall s | cpu s | goal s | build_seconds | stages (s) | strategy cache | load before -> after |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for row in result["builds"]:
        goal = GOALS.get(row["model"], "")
        stages = ", ".join(f"{k} {v:.1f}" for k, v in (row.get("stage_seconds") or {}).items()) or "-"
        cache = row.get("strategy_cache")
        cache = f"{cache['hits']} hit / {cache['measured']} measured" if cache else ""
        wall = f"{row['wall_s']:.1f}" if row["returncode"] == 0 else f"failed after {row['wall_s']:.1f}: {row.get('error')}"
        lines.append(f"| {row['model']} | {row['target']} | {row.get('calibration_clips') or '-'} | {wall} | {row.get('cpu_s', '-')} | {goal} |"
                     f" {row.get('build_seconds') or '-'} | {stages} | {cache} | {row['load_before']} -> {row['load_after']} |")
    lines += ["", "Other processes at the start of each build (ps, %CPU ELAPSED COMMAND):", ""]
    for row in result["builds"]:
        lines.append(f"- {row['model']} {row['target']}: " + "; ".join(f"`{o}`" for o in row["others"][:4]))
    versions = next((r["versions"] for r in result["builds"] if r.get("versions")), {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), help="model:target pairs")
    parser.add_argument("--label", default="current")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose edgevid is built with")
    parser.add_argument("--core", type=int, default=1, help="CPU core to pin each build to (-1: no pinning)")
    parser.add_argument("--calib-size", type=int, default=None)
    parser.add_argument("--option", action="append", default=[], help="--option KEY=VALUE passed to every build")
    parser.add_argument("--cold", action="store_true", help="fresh EDGEVID_HOME per build (no strategy cache)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "build_time")
    parser.add_argument("--keep-logs", default=None, help="folder to copy each build.log into")
    args = parser.parse_args()
    args.core = None if args.core < 0 else args.core
    sys.path.insert(0, str(args.code))
    from edgevid.bench import machine_info

    commit = subprocess.run(["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "not a git checkout"
    result = {"label": args.label, "machine": machine_info(), "core": args.core, "code": str(args.code), "commit": commit,
              "cold": args.cold, "calib_size": args.calib_size, "options": args.option, "builds": []}
    out_json = args.out.with_name(f"{args.out.name}_{args.label}.json")
    for case in args.cases:
        model, target = case.split(":")
        home = _cold_home() if args.cold else None
        row = run_case(model, target, args, home)
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
        print(json.dumps({k: row.get(k) for k in ("model", "target", "wall_s", "cpu_s", "build_seconds", "stage_seconds",
                                                   "strategy_cache", "load_before", "load_after", "error")}), flush=True)
        result["builds"].append(row)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=1))  # after every build: a long run keeps what it measured
        out_json.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
