"""Gather every artifact's manifest and report.json under a folder into one table."""

from __future__ import annotations

from pathlib import Path

from ..artifact import MANIFEST, Artifact


def collect(folder: str | Path) -> list[dict]:
    rows = []
    for manifest in sorted(Path(folder).glob(f"*/{MANIFEST}")):
        artifact = Artifact(manifest.parent)
        report = artifact.read_report()
        m, ev, bench = artifact.manifest, report.get("eval", {}), report.get("bench", {})
        run = bench.get("runs", {}).get("artifact", {})
        size = sum(artifact.file(n).stat().st_size for n in m.files if artifact.file(n).is_file())
        rows.append({
            "artifact": artifact.path.name,
            "target": m.target,
            "backend": m.backend,
            "precision": m.precision,
            "size MB": size / 2**20,
            "top-1": ev.get("top1"),
            "drop vs FP32": ev.get("top1_drop"),
            "agreement %": ev.get("agreement"),
            "SQNR dB": ev.get("sqnr_db"),
            "p50 ms": run.get("p50_ms"),
            "clips/s": run.get("clips_per_s"),
            "x eager": run.get("speedup_vs_eager"),
            "peak RSS MB": run.get("peak_rss_mb"),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(rows[0]) + " |"
    rule = "|" + "|".join("---" for _ in rows[0]) + "|"
    body = ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"
