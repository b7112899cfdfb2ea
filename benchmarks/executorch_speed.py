"""ExecuTorch XNNPACK speed against PyTorch eager FP32, and what each Conv3d strategy costs.

    python benchmarks/executorch_speed.py                      # X3D-S 13x182, UniFormerV2-B/16 8x224
    python benchmarks/executorch_speed.py --models x3d_s --threads 2 --seconds 5

Targets (issue 5): X3D-S INT8 .pte >= 2x eager FP32 throughput; UniFormerV2-B/16 INT8 .pte >= 1.5x.
Every figure of one table comes from one invocation, same thread count, each measurement in its
own subprocess (its own thread pools), measured round-robin over ``--rounds`` rounds; a row's
time is its best round (the least disturbed one: the machine may be shared). Weights are random
(speed only); INT8 is calibrated on a few SynthMotion clips preprocessed for the model.

Per model it builds (cached under ``--work``): FP32 .pte with every temporal Conv3d as "taps",
as "channels" (frames into channels), and "auto" (chosen per layer by the micro-benchmark), and
the INT8 .pte ("auto"). The per-layer micro-benchmark times are reported as the rewrite's
cost/benefit per strategy, with the multiply-adds each strategy executes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODELS = ("x3d_s", "uniformerv2_b16")
TARGETS = {"x3d_s": 2.0, "uniformerv2_b16": 1.5}


def _variants(model: str) -> list[tuple[str, str, str]]:
    """(label, precision, strategy) of the .pte files to build for ``model``."""
    variants = [("fp32 auto", "fp32", "auto"), ("int8 auto", "int8", "auto")]
    if model.startswith("x3d"):  # the Conv3d-heavy family: every layer under each strategy
        variants[1:1] = [("fp32 taps", "fp32", "taps"), ("fp32 channels", "fp32", "channels")]
    return variants


def build(model: str, precision: str, strategy: str, threads: int, work: Path, calib_clips: int) -> dict:
    """Build one .pte (or reuse it) and return its build record."""
    import torch

    from edgevid.models import create_model, get_spec
    from edgevid.backends.executorch.rewrite import StrategyChooser, rewrite_for_xnnpack
    from edgevid.backends.executorch.rewrite import xnnpack as xnn

    path = work / f"{model}-{precision}-{strategy}.pte"
    record_path = path.with_suffix(".json")
    if path.is_file() and record_path.is_file():
        return json.loads(record_path.read_text())
    torch.manual_seed(0)
    spec = get_spec(model)
    net = create_model(model, weights="random")
    example = torch.zeros(spec.input_shape(1))
    chooser = StrategyChooser(precision, threads) if strategy == "auto" else strategy
    started = time.perf_counter()
    rewritten = rewrite_for_xnnpack(net, example, strategy=chooser)
    rewrite_s = time.perf_counter() - started
    program = xnn.export(rewritten.graph_module, example)
    if precision == "int8":
        from edgevid.calibration import calibration_set

        clips = calibration_set("synthetic", spec, calib_clips).clips
        program = xnn.quantize(program, example, [torch.from_numpy(c) for c in clips])
    lowered = xnn.lower(program)
    report = xnn.delegation_report(lowered)
    path.write_bytes(xnn.pte_bytes(lowered))
    summary = rewritten.summary()
    record = {
        "model": model, "precision": precision, "strategy": strategy, "pte": str(path),
        "build_s": round(time.perf_counter() - started, 1), "rewrite_s": round(rewrite_s, 1),
        "mb": round(path.stat().st_size / 2**20, 2),
        "delegated_share": report["gemm_flops_delegated_share"], "int8_share": report["gemm_flops_int8_share"],
        "not_delegated": sorted({e["op"] for e in report["not_delegated"]}),
        "conv3d_by_strategy": summary["conv3d_by_strategy"],
        "conv3d_macs": sum(c["spec"].macs(c["strategy"] if c["strategy"] != "frames" else "taps")
                           for c in rewritten.frames.convs),
        "decisions": getattr(chooser, "decisions", []),
        "max_rel_error_fp32": rewritten.error,
    }
    record_path.write_text(json.dumps(record, indent=1))
    return record


def worker(kind: str, model: str, pte: str, threads: int, seconds: float) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    from edgevid.bench import peak_rss_mb, time_callable
    from edgevid.models import create_model, get_spec

    spec = get_spec(model)
    x = torch.randn(spec.input_shape(1), generator=torch.Generator().manual_seed(0))
    if kind == "eager":
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = create_model(model, weights="random").eval()

        def fn():
            with torch.inference_mode():
                return net(x)
    else:
        from edgevid.backends.executorch.rewrite.xnnpack import load_method, set_threads

        set_threads(threads)
        method = load_method(pte)

        def fn():
            return method.execute([x])
    timing = time_callable(fn, warmup=2, min_runs=5, min_seconds=seconds)
    return {"mean_ms": timing.mean_ms, "p50_ms": timing.p50_ms, "min_ms": timing.min_ms, "runs": timing.runs,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def measure(kind: str, model: str, pte: str, threads: int, seconds: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, model, pte or "-", str(threads), str(seconds)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"{kind} {model} {pte}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calib-clips", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/results/executorch_work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/executorch_speed.json"))
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, model, pte, threads, seconds = args.worker
        print(json.dumps(worker(kind, model, pte, int(threads), float(seconds))))
        return

    from edgevid.bench import machine_info

    args.work.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "threads": args.threads, "load_before": _load(), "models": {}}
    for model in args.models:
        builds = {label: build(model, precision, strategy, args.threads, args.work, args.calib_clips)
                  for label, precision, strategy in _variants(model)}
        rows: dict[str, list[dict]] = {"eager fp32": [], **{label: [] for label in builds}}
        for _ in range(args.rounds):  # round-robin, so a burst of load hits every row alike
            rows["eager fp32"].append(measure("eager", model, "", args.threads, args.seconds))
            for label, record in builds.items():
                rows[label].append(measure("pte", model, record["pte"], args.threads, args.seconds))
        best = {label: min(runs, key=lambda r: r["mean_ms"]) for label, runs in rows.items()}
        eager = best["eager fp32"]["mean_ms"]
        result["models"][model] = {
            "rows": {label: {**best[label], "rounds_mean_ms": [round(r["mean_ms"], 1) for r in rows[label]],
                             "speedup_vs_eager": eager / best[label]["mean_ms"]} for label in rows},
            "builds": builds,
            "target_int8_speedup": TARGETS.get(model),
        }
    result["load_after"] = _load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [f"ExecuTorch XNNPACK vs PyTorch eager FP32 - {result['machine'].get('cpu', '')},"
             f" threads={result['threads']}, load average {result['load_before']} -> {result['load_after']}"
             " (shared machine: figures are noisy)", ""]
    for model, data in result["models"].items():
        lines += [f"### {model} (random weights)", "",
                  "| run | mean ms | min ms | clips/s | speed-up vs eager | .pte MB | Conv3d as | conv MACs (G) | build s |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
        for label, row in data["rows"].items():
            b = data["builds"].get(label, {})
            strategies = ", ".join(f"{k} {v}" for k, v in b.get("conv3d_by_strategy", {}).items() if v) if b else ""
            macs = f"{b['conv3d_macs'] / 1e9:.2f}" if b else ""
            lines.append(f"| {label} | {row['mean_ms']:.1f} | {row['min_ms']:.1f} | {1e3 / row['mean_ms']:.2f} |"
                         f" {row['speedup_vs_eager']:.2f}x | {b.get('mb', '')} | {strategies} | {macs} | {b.get('build_s', '')} |")
        target = data["target_int8_speedup"]
        if target:
            got = data["rows"]["int8 auto"]["speedup_vs_eager"]
            lines.append(f"\nINT8 .pte vs eager FP32: {got:.2f}x (target >= {target}x: {'met' if got >= target else 'NOT met'})")
        seen, table = set(), []
        for b in data["builds"].values():
            for d in b.get("decisions", []):
                if (b["precision"], d["spec"]) in seen:
                    continue
                seen.add((b["precision"], d["spec"]))
                geometry = d["spec"].replace("conv3d(", "").rstrip(")")
                table.append(f"| {b['precision']} | {geometry} | {d['ms']['taps']:.2f} | {d['ms']['channels']:.2f} |"
                             f" {d['strategy']} |")
        if table:
            lines += ["", "Per-layer Conv3d micro-benchmark (the layer between depthwise 1x1 convs, best ms):", "",
                      "| precision | layer geometry | taps | channels | chosen |", "|---|---|---:|---:|---|", *table]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
