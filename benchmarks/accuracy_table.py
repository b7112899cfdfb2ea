"""INT8 accuracy of every reference model on every INT8 backend, with 95% confidence intervals.

    python benchmarks/accuracy_table.py [--models x3d_synth ...] [--targets onnx-cpu ...] [--clips 1000]

For each SynthMotion reference model with shipped weights and each target (``onnx-cpu``: ONNX
Runtime; ``intel-cpu``: OpenVINO; ``android``: ExecuTorch; ``jetson``: the TensorRT Q/DQ ONNX, run
under ONNX Runtime CPU where there is no GPU): build INT8 with the target's default recipe (reused
from ``artifacts/accuracy`` when one built from the same weights, calibration and options is there;
``--rebuild`` after a recipe change in the code), evaluate on the 1,000-clip test split with the
model's test views against PyTorch FP32, and write top-1, the drop with its exact McNemar-based 95%
interval, agreement (Wilson interval) and SQNR to ``benchmarks/results/accuracy_table.{json,md}``
and between the ``accuracy-table`` markers of the README. A model without weights or a backend
that is not installed gets a row saying so, never a number.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

MODELS = ("x3d_synth", "uniformerv2_synth", "timesformer_synth", "tubevit_synth")
TARGETS = ("onnx-cpu", "intel-cpu", "android", "jetson")
README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- accuracy-table -->", "<!-- /accuracy-table -->"
GOAL_DROP, GOAL_UPPER = 0.3, 1.0


def row_for(model: str, target: str, result: dict | None, note: str = "") -> dict:
    if result is None:
        return {"model": model, "target": target, "note": note}
    ci, agree = result.get("top1_drop_ci") or [None, None], result.get("agreement_ci") or [None, None]
    return {
        "model": model, "target": target, "backend": result.get("backend"), "videos": result["videos"],
        "fp32_top1": result.get("ref_top1"), "int8_top1": result["top1"], "drop": result.get("top1_drop"),
        "drop_ci": ci, "agreement": result.get("agreement"), "agreement_ci": agree, "sqnr_db": result.get("sqnr_db"),
        "discordant": result.get("discordant"), "mcnemar_p": result.get("mcnemar_p"),
        "meets_goal": None if result.get("top1_drop") is None else bool(
            result["top1_drop"] <= GOAL_DROP + 1e-9 and ci[1] <= GOAL_UPPER + 1e-9),
        "note": note,
    }


def markdown(rows: list[dict], clips: int) -> str:
    from edgevid.harness.report import cell

    lines = [f"INT8 vs PyTorch FP32 on {clips} fresh SynthMotion test clips; [95% CI]: the drop's is exact"
             " McNemar-based (paired), agreement's Wilson. Goal: drop <= 0.3 points with the upper bound <= 1.0.", "",
             "| model | target | FP32 top-1 | INT8 top-1 | drop [95% CI] | agreement [95% CI] | SQNR dB | goal |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "int8_top1" not in r:
            lines.append(f"| `{r['model']}` | `{r['target']}` | — | — | — | — | — | {r['note']} |")
            continue
        drop = f"{r['drop']:.2f} [{r['drop_ci'][0]:.2f}, {r['drop_ci'][1]:.2f}]"
        agree = f"{r['agreement']:.1f}% [{r['agreement_ci'][0]:.1f}, {r['agreement_ci'][1]:.1f}]"
        goal = "met" if r["meets_goal"] else "**missed**"
        lines.append(f"| `{r['model']}` | `{r['target']}` | {r['fp32_top1']:.1f}% | {r['int8_top1']:.1f}% | {drop} |"
                     f" {agree} | {cell(r['sqnr_db'])} | {goal}{' (' + r['note'] + ')' if r['note'] else ''} |")
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = README) -> bool:
    """Replace the text between the README's markers (False, untouched, when they are missing)."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + BEGIN + "\n" + table + rest[rest.index(END):])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--clips", type=int, default=None, help="test clips (default 1,000: the accuracy-table split)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--calib-size", type=int, default=None,
                        help="calibration clips (default: the target's; ONNX Runtime's entropy calibration of the"
                             " 512-token TimeSformer needs <= ~90 on a 24 GB machine)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/accuracy"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table")
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild every artifact (a recipe change in the code is not detected as stale)")
    args = parser.parse_args(argv)

    from edgevid.artifact import Artifact
    from edgevid.bench import ensure_artifact
    from edgevid.data.synthmotion import TABLE_CLIPS, ensure_split, table_split
    from edgevid.errors import EdgevidError
    from edgevid.harness.eval import evaluate
    from edgevid.models.weights import SHIPPED
    from edgevid.targets import get_target

    say = lambda what: print(f"accuracy: {what}", file=sys.stderr, flush=True)  # noqa: E731
    clips = args.clips or TABLE_CLIPS
    data = table_split("test") if clips == TABLE_CLIPS else ensure_split("test", clips)
    rows, started = [], time.time()
    for model in args.models:
        if not (SHIPPED / f"{model}.pt").is_file():
            rows += [row_for(model, t, None, "no reference weights (scripts/train_reference.py)") for t in args.targets]
            continue
        for target in args.targets:
            try:
                say(f"{model} {target}: INT8 artifact (built unless a current one is there)")
                path, built = ensure_artifact(model, get_target(target), "int8", args.out, None, None, args.calib_size,
                                              args.rebuild)
                artifact = Artifact(path)
                say(f"{model} {target}: {'built' if built else 'reusing'} {path}")
                say(f"{model} {target}: evaluating on {clips} test clips")
                result = evaluate(artifact.path, data, threads=args.threads)
            except (EdgevidError, ImportError) as exc:
                rows.append(row_for(model, target, None, f"not measured: {str(exc).splitlines()[0][:160]}"))
                continue
            note = "engine pending on device: Q/DQ ONNX under ONNX Runtime" if "pending" in result.get("label", "") else ""
            rows.append(row_for(model, target, result, note))
            say(f"{model} {target}: drop {rows[-1]['drop']:.2f} {rows[-1]['drop_ci']}")
    table = markdown(rows, clips)
    args.results.mkdir(parents=True, exist_ok=True)
    meta = {"clips": clips, "data": str(data), "host": platform.node(), "python": platform.python_version(),
            "seconds": round(time.time() - started), "rows": rows}
    (args.results / "accuracy_table.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.results / "accuracy_table.md").write_text("# INT8 accuracy table\n\n" + table)
    if not args.no_readme and clips == TABLE_CLIPS and not update_readme(table):
        say(f"README has no {BEGIN} ... {END} markers: table not inserted")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
