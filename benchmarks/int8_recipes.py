"""INT8 recipe variants of one model on one target, each scored on the 1,000-clip val split.

    python benchmarks/int8_recipes.py x3d_synth onnx-cpu \
        '[{"name": "p9998", "options": {"calibrate_method": "percentile", "percentile": 99.98}},
          {"name": "minmax-100", "calib_size": 100, "options": {"calibrate_method": "minmax"}}]'

Each variant is built with ``build_artifact`` (into ``--out/<name>``) and evaluated against PyTorch
FP32 with the model's test views; one JSON line per variant (top-1, drop with its exact
McNemar-based 95% interval, agreement, lost/gained clips, logits SQNR, build seconds). Recipes are
chosen here, on val, and reported on the test split by ``accuracy_table.py``
(``results/int8_recipes_val.md`` lists the variants measured for the current defaults).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("target")
    parser.add_argument("variants", help='JSON list of {"name", "options"?, "calib_size"?}')
    parser.add_argument("--out", type=Path, default=Path("artifacts/recipes"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from edgevid.build import build_artifact
    from edgevid.data.synthmotion import table_split
    from edgevid.harness.eval import evaluate

    data = table_split("val")
    for variant in json.loads(args.variants):
        started = time.time()
        artifact = build_artifact(args.model, args.target, "int8", calib_size=variant.get("calib_size"),
                                  options=variant.get("options") or None, out=args.out / variant["name"])
        built = time.time() - started
        result = evaluate(artifact.path, data, threads=args.threads)
        print(json.dumps({"model": args.model, "target": args.target, "name": variant["name"], "build_s": round(built),
                          "top1": result["top1"], "ref": result.get("ref_top1"), "drop": result.get("top1_drop"),
                          "ci": result.get("top1_drop_ci"), "agree": result.get("agreement"),
                          "disc": result.get("discordant"), "sqnr": result.get("sqnr_db")}), flush=True)


if __name__ == "__main__":
    main()
