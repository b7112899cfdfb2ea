"""Accuracy gates: the thresholds a run must meet, read from a small YAML.

```yaml
max_top1_drop: 1.0      # top-1 points below the FP32 reference, on the labels
min_agreement: 95.0     # % of videos whose top-1 equals the FP32 reference's
min_sqnr_db: 15.0       # SQNR of the logits against the reference
max_sqnr_loss_db: 3.0   # `edgevid regress` only: SQNR lost against the baseline run
precision:              # optional overrides per artifact precision
  fp32: {max_top1_drop: 0.0, min_agreement: 99.0, min_sqnr_db: 40.0}
gate_on: value          # or upper_ci / lower_ci: statistical gates on the figures' 95% intervals
```

``gate_on`` (named for the drop gate): ``value`` checks the measured figures. ``upper_ci`` passes
only when the data says so: ``max_top1_drop`` checks the upper bound of the drop's 95% interval
(exact McNemar-based, paired), ``min_agreement`` / ``min_top1`` the lower bound of their Wilson
intervals. ``lower_ci`` fails only when the data says so: the opposite bounds. SQNR gates always
check the value (it has no sampling interval here).

Where they come from, first match wins: ``--gates FILE``; ``gates.yaml`` in the golden pack;
``targets/gates/<target>.yaml``; ``targets/gates/default.yaml``. Unset gates are not checked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import EdgevidError
from ..paths import data_file

GATES_FILE = "gates.yaml"
RULE_GATES = ("max_top1_drop", "min_agreement", "min_sqnr_db", "min_top1", "max_sqnr_loss_db")


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_top1_drop: float | None = Field(None, description="top-1 points below the reference (or the baseline)")
    min_agreement: float | None = Field(None, ge=0, le=100, description="% of top-1 equal to the reference's")
    min_sqnr_db: float | None = None
    min_top1: float | None = Field(None, ge=0, le=100)
    max_sqnr_loss_db: float | None = Field(None, ge=0, description="regress: SQNR lost against the baseline")
    gate_on: Literal["value", "upper_ci", "lower_ci"] = Field(
        "value", description="value, or the end of each figure's 95% interval the gates check (see above)")
    precision: dict[str, dict[str, float]] = {}

    def for_precision(self, precision: str | None) -> "Gates":
        """These gates with the overrides of ``precision`` applied."""
        override = self.precision.get(precision or "", {})
        try:
            return Gates(**{**self.model_dump(exclude={"precision"}), **override})
        except ValidationError as exc:
            first = str(exc).replace("\n", " ")[:200]
            raise EdgevidError(f"gates for precision {precision} are invalid: {first}") from None


def load_gates(path: str | Path, flag: str = "gates file") -> Gates:
    """Read a gates YAML; an empty or comment-only file is an error, never "no gates, passed"."""
    path = Path(path)
    if not path.is_file():
        raise EdgevidError(f"{flag} {path}: no such file; write a YAML with max_top1_drop / min_agreement / min_sqnr_db")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if raw is None:
            raise EdgevidError(f"{flag} {path} sets no gates (empty or only comments); set at least one of"
                               " max_top1_drop / min_agreement / min_sqnr_db / min_top1")
        if not isinstance(raw, dict):
            raise ValueError("expected a mapping of gate: value")
        gates = Gates(**raw)
    except (yaml.YAMLError, ValidationError, ValueError, TypeError, UnicodeDecodeError) as exc:
        first = str(exc).replace("\n", " ")[:300]
        raise EdgevidError(f"{flag} {path} is invalid: {first}") from None
    if not any(getattr(gates, name) is not None for name in RULE_GATES) and not gates.precision:
        raise EdgevidError(f"{flag} {path} sets no gates; set at least one of {' / '.join(RULE_GATES)}")
    for name in RULE_GATES:
        value = getattr(gates, name)
        if value is not None and not math.isfinite(value):
            raise EdgevidError(f"{flag} {path}: {name} is {value}; give a finite number")
    return gates


def find_gates(explicit: str | Path | None, pack: Path | None, target: str | None) -> tuple[Gates, str]:
    """The gates to apply and where they came from."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if pack is not None:
        candidates.append(Path(pack) / GATES_FILE)
    folder = data_file("targets") / "gates"
    if target:
        candidates.append(folder / f"{target}.yaml")
    candidates.append(folder / "default.yaml")
    for i, path in enumerate(candidates):
        if path.is_file() or (explicit and i == 0):
            return load_gates(path, "--gates" if explicit and i == 0 else "gates file"), str(path)
    return Gates(max_top1_drop=1.0, min_agreement=95.0, min_sqnr_db=15.0), "built-in defaults"


_RULES = (  # gate, metric, upper-bounded (a max_ gate), has a 95% interval
    ("max_top1_drop", "top1_drop", True, True),
    ("min_agreement", "agreement", False, True),
    ("min_sqnr_db", "sqnr_db", False, False),
    ("min_top1", "top1", False, True),
    ("max_sqnr_loss_db", "sqnr_loss_db", True, False),
)


def check(metrics: dict[str, Any], gates: Gates) -> list[dict]:
    """One row per set gate: threshold, the value checked, passed (None when the run lacks the figure).

    Under ``gate_on: upper_ci`` / ``lower_ci`` a gate on a figure with an interval checks one end
    of ``<metric>_ci`` (the row's ``checked``, with ``measured`` and ``ci``); a run without the
    interval gets ``passed: None`` like a run without the figure, never the point value instead."""
    rows = []
    for gate, key, is_max, has_ci in _RULES:
        threshold = getattr(gates, gate)
        if threshold is None or (key == "sqnr_loss_db" and key not in metrics):
            continue
        value, checked, ci = metrics.get(key), "value", None
        if has_ci and gates.gate_on != "value":
            ci = metrics.get(f"{key}_ci")
            # upper_ci: the bound that is worst for the artifact; lower_ci: the one that is best
            worst = gates.gate_on == "upper_ci"
            end = 1 if is_max == worst else 0
            checked = ("upper" if end else "lower") + "_ci"
            value = None if not ci else ci[end]
        if value is None:
            passed = None
        else:
            passed = bool(value <= threshold + 1e-9 if is_max else value >= threshold - 1e-9)
        row = {"gate": gate, "metric": key, "threshold": threshold, "value": value, "passed": passed}
        if ci is not None or checked != "value":
            row.update(checked=checked, measured=metrics.get(key), ci=ci)
        rows.append(row)
    return rows


def failed(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["passed"] is False]


def describe(rows: list[dict]) -> str:
    def one(r: dict) -> str:
        if r.get("checked", "value") == "value":
            return f"{r['metric']} {r['value']:.2f} vs {r['gate']} {r['threshold']}"
        ci = r["ci"]
        return (f"{r['metric']} {r['measured']:.2f} (95% CI {ci[0]:.2f} to {ci[1]:.2f}; {r['checked']} {r['value']:.2f})"
                f" vs {r['gate']} {r['threshold']}")

    return "; ".join(one(r) for r in rows)
