"""INT8 accuracy of the SynthMotion reference models against the calibration-set size, per backend.

    python benchmarks/calib_size.py                                   # x3d_synth, uniformerv2_synth; 4 targets
    python benchmarks/calib_size.py --models x3d_synth --targets android --sizes 16 32 300

Every build calibrates on the first N clips of the SynthMotion calib split (the same clips a
plain `edgevid build --calib synthetic --calib-size N` takes); every artifact is evaluated on the
same 200 val clips (disjoint seeds): top-1, the FP32 PyTorch top-1, agreement with FP32 (% of clips
with the same top-1) and SQNR of the logits. This is what picks the default calibration size per
backend (issue 20): the smallest size whose figures match the 300-clip ones. Both cores are used
unless ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TARGETS = ("onnx-cpu", "intel-cpu", "android", "jetson")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["x3d_synth", "uniformerv2_synth"])
    parser.add_argument("--targets", nargs="*", default=list(DEFAULT_TARGETS))
    parser.add_argument("--sizes", nargs="*", type=int, default=[32, 300])
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "calib_size.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from edgevid.bench import machine_info
    from edgevid.build import build_artifact
    from edgevid.data.synthmotion import ensure_split
    from edgevid.harness.eval import evaluate

    val = ensure_split("val", args.val)
    result = {"machine": machine_info(), "val_clips": args.val, "threads": args.threads, "rows": []}
    if args.out.is_file():  # resume: keep what an earlier run measured
        result["rows"] = json.loads(args.out.read_text()).get("rows", [])
    done = {(r["model"], r["target"], r["calib_clips"]) for r in result["rows"]}
    for model in args.models:
        for target in args.targets:
            for size in args.sizes:
                if (model, target, size) in done:
                    continue
                with tempfile.TemporaryDirectory(prefix="edgevid-calib-size-") as tmp:
                    started = time.perf_counter()
                    art = build_artifact(model, target, "int8", calib="synthetic", calib_size=size, out=tmp)
                    build_s = time.perf_counter() - started
                    ev = evaluate(art.path, val, threads=args.threads)
                row = {"model": model, "target": target, "calib_clips": size, "top1": ev["top1"],
                       "ref_top1": ev["ref_top1"], "agreement": ev["agreement"], "sqnr_db": ev["sqnr_db"],
                       "build_s": round(build_s, 1), "stage_seconds": art.manifest.stage_seconds,
                       "load": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
                args.out.write_text(json.dumps(result, indent=1))
                args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["## INT8 accuracy vs calibration-set size (SynthMotion reference models)", "",
             f"{m.get('cpu')} ({m.get('cores')} cores). Calibration: the first N clips of the SynthMotion calib split;"
             f" evaluation: the same {result['val_clips']} val clips for every row (top-1 of the artifact, top-1 of"
             " PyTorch FP32, agreement = % of clips with the FP32 top-1, SQNR of the logits).", "",
             "| model | target | calib clips | top-1 | FP32 top-1 | agreement % | SQNR dB | build s (shared machine) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(result["rows"], key=lambda r: (r["model"], r["target"], r["calib_clips"])):
        lines.append(f"| {r['model']} | {r['target']} | {r['calib_clips']} | {r['top1']:.1f} | {r['ref_top1']:.1f} |"
                     f" {r['agreement']:.1f} | {r['sqnr_db']:.1f} | {r['build_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
