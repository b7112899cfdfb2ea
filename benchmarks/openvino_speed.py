"""OpenVINO speed benchmark: INT8 / FP32 IR vs PyTorch eager and torch.compile FP32, one run.

For each model (random weights; speed only) this builds the intel-cpu FP32 and INT8 artifacts,
then times, one after the other and each in its own subprocess with the same thread count:
PyTorch eager FP32, torch.compile FP32, the FP32 IR and the INT8 IR (``edgevid.bench.measure``,
the code behind `edgevid bench`). It checks the issue's speed targets (X3D-S at its official
test shape: INT8 >= 4x eager; UniFormerV2-B/16 8x224: INT8 >= 2.5x eager) and cross-checks
`edgevid bench` throughput against OpenVINO's own ``benchmark_app`` on the same IR with the same
properties (within 10%).

    python benchmarks/openvino_speed.py [--threads 2] [--models x3d_s uniformerv2_b16 ...]

Families not registered yet are skipped with a line saying so. Ratios are only meaningful
within one run on one machine: on a shared machine, say so next to them.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("x3d_s", "uniformerv2_b16", "timesformer_b", "tubevit_b")
TARGETS = {"x3d_s": 4.0, "uniformerv2_b16": 2.5}  # INT8 throughput / eager FP32 throughput
AGREEMENT = 0.10  # edgevid bench vs benchmark_app


def build(model: str, precision: str, out: Path, calib_size: int):
    from edgevid.build import build_artifact

    started = time.perf_counter()
    art = build_artifact(model, "intel-cpu", precision, weights="random",
                         calib="synthetic" if precision == "int8" else None, calib_size=calib_size, out=out)
    print(f"  built {art.path.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return art


def benchmark_app(xml: Path, config: dict, seconds: int) -> float:
    """Throughput (FPS) that OpenVINO's benchmark_app reports for one synchronous request
    compiled with exactly ``config`` (the runner's properties, passed with -load_config)."""
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps({"CPU": config}))
        cmd = [tool, "-m", str(xml), "-d", "CPU", "-api", "sync", "-load_config", str(cfg), "-t", str(seconds)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 300)
    found = re.search(r"Throughput:\s+([\d.]+)\s+FPS", proc.stdout)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"benchmark_app failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return float(found.group(1))


def runner_config(artifact, threads: int) -> dict:
    """The compile properties `edgevid bench` uses for this artifact (latency mode)."""
    from edgevid.backends.openvino import RUNTIME_FILE, runtime_config

    runtime = json.loads(artifact.file(RUNTIME_FILE).read_text())
    return runtime_config(runtime["device"], "latency", threads, runtime.get("inference_precision"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    parser.add_argument("--calib-size", type=int, default=16, help="calibration clips (speed does not depend on it)")
    parser.add_argument("--app-seconds", type=int, default=15, help="benchmark_app -t")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench-openvino"))
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from edgevid.bench import machine_info, measure
    from edgevid.models import list_models

    machine = machine_info()
    print(f"machine: {machine.get('cpu')} ({machine.get('cores')} cores, ISA {machine.get('isa')}),"
          f" threads={args.threads}", flush=True)
    rows, checks = [], []
    registered = set(list_models())
    for model in args.models:
        if model not in registered:
            print(f"skip {model}: not registered yet (its model family has not landed)", flush=True)
            continue
        print(f"{model}:", flush=True)
        fp32 = build(model, "fp32", args.out, args.calib_size)
        int8 = build(model, "int8", args.out, args.calib_size)
        runs = {}
        for name, kind, art in (("eager", "eager", int8), ("compile", "compile", int8),
                                ("fp32_ir", "artifact", fp32), ("int8_ir", "artifact", int8)):
            runs[name] = measure(kind, art.path, args.threads, args.seconds)
            print(f"  {name:8s} mean {runs[name]['mean_ms']:9.2f} ms  p50 {runs[name]['p50_ms']:9.2f} ms"
                  f"  ({runs[name]['runs']} runs, {runs[name]['outliers_dropped']} outliers dropped)", flush=True)
        fps = {name: 1e3 / run["mean_ms"] for name, run in runs.items()}
        app = benchmark_app(int8.file("model.xml"), runner_config(int8, args.threads), args.app_seconds)
        row = {
            "model": model, "input": "x".join(map(str, int8.manifest.input_shape)),
            **{f"{k}_ms": round(v["mean_ms"], 2) for k, v in runs.items()},
            "fp32_ir_vs_eager": fps["fp32_ir"] / fps["eager"],
            "int8_vs_eager": fps["int8_ir"] / fps["eager"],
            "int8_vs_compile": fps["int8_ir"] / fps["compile"],
            "int8_clips_per_s": fps["int8_ir"], "benchmark_app_fps": app,
            "bench_vs_app": fps["int8_ir"] / app - 1,
            "int8_layers_float": int8.manifest.quantization.get("layers_float"),
        }
        rows.append(row)
        print(f"  benchmark_app (same IR, same properties, sync): {app:.2f} FPS vs edgevid bench"
              f" {fps['int8_ir']:.2f} clips/s ({100 * row['bench_vs_app']:+.1f}%)", flush=True)
        checks.append((f"{model}: edgevid bench within {AGREEMENT:.0%} of benchmark_app",
                       abs(row["bench_vs_app"]) <= AGREEMENT, f"{100 * row['bench_vs_app']:+.1f}%"))
        if model in TARGETS:
            checks.append((f"{model}: INT8 >= {TARGETS[model]}x eager FP32", row["int8_vs_eager"] >= TARGETS[model],
                           f"{row['int8_vs_eager']:.2f}x"))

    if rows:
        print(f"\n| model | input | eager ms | compile ms | FP32 IR ms | INT8 IR ms | FP32 IR / eager | INT8 / eager"
              f" | INT8 / compile | INT8 clips/s | benchmark_app FPS |\n|{'---|' * 11}")
        for r in rows:
            print(f"| {r['model']} | {r['input']} | {r['eager_ms']} | {r['compile_ms']} | {r['fp32_ir_ms']} |"
                  f" {r['int8_ir_ms']} | {r['fp32_ir_vs_eager']:.2f}x | {r['int8_vs_eager']:.2f}x |"
                  f" {r['int8_vs_compile']:.2f}x | {r['int8_clips_per_s']:.2f} | {r['benchmark_app_fps']:.2f} |")
        print(f"\nthroughput = 1 / mean latency of one clip (batch 1), threads={args.threads}, random weights")
    for text, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}: {value}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "threads": args.threads, "rows": rows,
                                         "checks": [{"check": t, "ok": ok, "value": v} for t, ok, v in checks]},
                                        indent=2, default=str))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
