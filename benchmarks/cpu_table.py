"""Reproduce the README's CPU table: `edgevid bench --all-targets` for one model of each family.

    python benchmarks/cpu_table.py [--models x3d_synth ...] [--threads 2] [--seconds 3] [--repeats 2]

For each model: build what is missing for every CPU target of this machine and precision
(``artifacts/bench``), then time every artifact, PyTorch eager and torch.compile FP32 in one
invocation. Weights: the shipped reference weights when present, else seeded random weights
(speed does not depend on them; the table says which). Writes ``benchmarks/results/cpu-<host>.md``
(a summary table over all models, then each model's full table with machine, versions, peaks
and method) and the JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

MODELS = ("x3d_synth", "uniformerv2_synth", "timesformer_synth", "tubevit_synth")
SUMMARY = ("model", "target", "precision", "p50 ms", "p99 ms", "clips/s", "e2e clips/s", "x eager", "x compile", "GOPS",
           "% peak", "peak RSS MB", "size MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=None, help="default: every core this process may use")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--targets", nargs="+", default=[], help="only these targets (default: every CPU target of this machine)")
    parser.add_argument("--precisions", nargs="+", default=[], help="only these precisions (default: each target's)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    from edgevid.bench import bench_all_targets, markdown, table_rows
    from edgevid.errors import EdgevidError
    from edgevid.models import list_models
    from edgevid.models.weights import SHIPPED

    say = lambda what: print(f"bench: {what}", file=sys.stderr, flush=True)  # noqa: E731
    args.results.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-{platform.node() or 'host'}"
    results, sections, summary = {}, [], []
    for model in args.models:
        weights = None if (SHIPPED / f"{model}.pt").is_file() else "random"
        if model not in list_models():
            sections.append(f"### {model}\n\nnot registered in this edgevid: skipped\n")
        else:
            try:
                result = bench_all_targets(model, args.out, args.threads, args.targets, args.precisions, weights=weights,
                                           min_seconds=args.seconds, repeats=args.repeats, progress=say)
            except EdgevidError as exc:
                sections.append(f"### {model}\n\nfailed: {exc}\n")
            else:
                results[model] = result
                sections.append(markdown(result) + f"\nweights: {weights or 'reference'}\n")
                for row in table_rows(result):
                    if row.get("target") == "-":  # a baseline row: name it in the target column
                        row = {**row, "target": row["run"].replace(" (baseline)", "")}
                    summary.append({"model": model, **row})
        if results:  # after every model: partial results survive an interrupted run
            write(args.results / stem, results, sections, summary)
    if not results:
        print("no model could be benchmarked", file=sys.stderr)
        return 1
    print((args.results / f"{stem}.md").read_text())
    print(f"wrote {args.results / (stem + '.md')}", file=sys.stderr)
    return 0


def write(stem: Path, results: dict, sections: list[str], summary: list[dict]) -> None:
    from edgevid.bench import cell

    first = next(iter(results.values()))
    machine = first["machine"]
    lines = [f"## CPU benchmark: {machine.get('cpu')} ({machine.get('usable_cores')} cores, {' '.join(machine.get('isa', []))}),"
             f" {first['threads']} threads", "",
             "| " + " | ".join(SUMMARY) + " |", "|" + "|".join("---" for _ in SUMMARY) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c), c) for c in SUMMARY) + " |" for row in summary]
    stem.parent.joinpath(stem.name + ".md").write_text("\n".join(lines) + "\n\n" + "\n".join(sections))
    stem.parent.joinpath(stem.name + ".json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
