"""`edgevid regress`: one artifact's accuracy now against a baseline run (the last good build).

Both runs must cover the same videos (same dataset digest, or the same golden pack). The gates
read here as: ``max_top1_drop`` top-1 points lost against the baseline; ``min_agreement`` % of
videos whose top-1 is unchanged between the runs; ``min_sqnr_db`` the current SQNR against the
FP32 reference; ``max_sqnr_loss_db`` SQNR lost against the baseline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..artifact import REPORT, Artifact
from ..errors import EdgevidError
from . import gates as gates_mod
from .errors import GateFailed

SECTIONS = ("eval", "golden")
COMPARED = ("top1", "top5", "ref_top1", "agreement", "cosine", "sqnr_db", "max_abs_diff")


def read_baseline(path: str | Path) -> dict:
    path = Path(path)
    file = path / REPORT if path.is_dir() else path
    if not file.is_file():
        raise EdgevidError(f"--baseline {path}: no such report; pass a saved report.json of the last good build")
    try:
        report = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgevidError(f"--baseline {file}: not a JSON report") from None
    if not isinstance(report, dict) or not any(isinstance(report.get(s), dict) for s in SECTIONS):
        raise EdgevidError(f"--baseline {file} holds no eval or golden run; run `edgevid eval` on the good build first")
    return report


def _same_videos(section: str, current: dict, base: dict) -> None:
    key = "data_digest" if section == "eval" else "pack_digest"
    if current.get(key) != base.get(key):
        where = "data" if section == "eval" else "pack"
        raise EdgevidError(
            f"the baseline's {section} ran on other videos ({where} {base.get(where)}) than the current one"
            f" ({current.get(where)}); rerun with --{'data' if section == 'eval' else 'pack'} {base.get(where)}"
        )


def _sqnr_loss(base: float | None, current: float | None) -> float | None:
    if base is None or current is None:
        return None
    if math.isinf(base) and math.isinf(current):
        return 0.0
    return base - current


def compare_runs(section: str, current: dict, base: dict) -> dict:
    """Per-metric deltas and the videos whose prediction changed between two runs."""
    if current.get("model") != base.get("model"):
        raise EdgevidError(f"the baseline is a run of {base.get('model')}, the artifact is {current.get('model')}")
    _same_videos(section, current, base)
    before = {r["video"]: r for r in base.get("per_video", [])}
    now = {r["video"]: r for r in current.get("per_video", [])}
    common = sorted(set(before) & set(now))
    if not common:
        raise EdgevidError("the baseline and the current run share no evaluated video; rerun both on the same set")
    changed = [v for v in common if before[v]["pred"] != now[v]["pred"]]
    broke = [v for v in changed if before[v]["pred"] == before[v]["label"]]
    fixed = [v for v in changed if now[v]["pred"] == now[v]["label"]]
    # top-1 over the common videos, so a partial run is compared like with like
    top1 = lambda runs: 100.0 * sum(runs[v]["pred"] == runs[v]["label"] for v in common) / len(common)  # noqa: E731
    metrics = {
        "videos": len(common),
        "top1": top1(now),
        "baseline_top1": top1(before),
        "top1_drop": top1(before) - top1(now),
        "agreement": 100.0 * (len(common) - len(changed)) / len(common),
        "sqnr_db": current.get("sqnr_db"),
        "sqnr_loss_db": _sqnr_loss(base.get("sqnr_db"), current.get("sqnr_db")),
    }
    return {
        "section": section,
        "metrics": metrics,
        "table": [{"metric": k, "baseline": base.get(k), "current": current.get(k),
                   "delta": None if base.get(k) is None or current.get(k) is None else current[k] - base[k]}
                  for k in COMPARED if k in base or k in current],
        "changed": [{"video": v, "baseline": before[v]["pred"], "current": now[v]["pred"], "label": now[v]["label"]}
                    for v in changed],
        "newly_wrong": broke,
        "newly_right": fixed,
        "baseline": {k: base.get(k) for k in ("artifact", "target", "precision", "artifact_digest", "status")},
        "current": {k: current.get(k) for k in ("artifact", "target", "precision", "artifact_digest", "status")},
    }


def regress(
    artifact_path: str | Path,
    baseline: str | Path,
    gates: str | Path | None = None,
    data: str | None = None,
    pack: str | None = None,
    threads: int | None = None,
    section: str | None = None,
    track=None,
    check: bool = True,
) -> dict:
    """Compare the artifact's latest eval/golden run (run now with ``data``/``pack``) with ``baseline``."""
    artifact = Artifact(artifact_path)
    base_report = read_baseline(baseline)
    if data:
        from .eval import evaluate

        evaluate(artifact.path, data, threads=threads, track=track)
        section = "eval"
    elif pack:
        from .golden import run_pack

        try:
            run_pack(artifact.path, pack, gates=gates, threads=threads, track=track)
        except GateFailed:
            pass  # the golden section is written; regress judges against the baseline below
        section = "golden"
    report = artifact.read_report()
    if section is None:
        section = next((s for s in SECTIONS if isinstance(report.get(s), dict) and isinstance(base_report.get(s), dict)), None)
        if section is None:
            raise EdgevidError(f"{artifact.path} has no eval or golden run to compare with {baseline};"
                               " pass --data MANIFEST or --pack PACK to run one now")
    if section not in SECTIONS:
        raise EdgevidError(f"--section {section}: choose eval or golden")
    for name, rep in (("the artifact", report), ("the baseline", base_report)):
        if not isinstance(rep.get(section), dict):
            raise EdgevidError(f"{name} has no {section} run; run one or pass --section")
    result = compare_runs(section, report[section], base_report[section])
    gate_set, source = gates_mod.find_gates(gates, Path(pack) if pack else None, artifact.manifest.target)
    rows = gates_mod.check(result["metrics"], gate_set.for_precision(artifact.manifest.precision))
    bad = gates_mod.failed(rows)
    result.update(status="regressed" if bad else "ok", gates={"source": source, "checks": rows, "passed": not bad},
                  baseline_file=str(baseline))
    from ..pipeline import record_report

    record_report(artifact, "regress", result)
    result["artifact"] = artifact.path.name
    if check:
        raise_for(result)
    return result


def raise_for(result: dict) -> None:
    """``GateFailed`` (exit 1) when the comparison missed a gate."""
    bad = gates_mod.failed(result["gates"]["checks"])
    if bad:
        raise GateFailed(f"{result['artifact']} regressed against {result['baseline_file']}: {gates_mod.describe(bad)}"
                         f" ({len(result['newly_wrong'])} video(s) newly wrong)")
