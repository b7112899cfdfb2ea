"""Reports: one artifact's report.md, and `edgevid report DIR` over every artifact under DIR
(a table, plus an accuracy-vs-FPS plot drawn with matplotlib from the ``report`` extra)."""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path

from ..artifact import MANIFEST, Artifact, write_text_atomic

log = logging.getLogger("edgevid")

PLOT_FILE = "report.png"
TABLE_FILE = "report.md"


def _accuracy(report: dict) -> tuple[dict, str | None]:
    """The accuracy section to show: a complete eval, else a golden run (either may be partial)."""
    for section in ("eval", "golden"):
        data = report.get(section)
        if isinstance(data, dict) and data.get("videos"):
            return data, section
    return {}, None


def collect(folder: str | Path) -> list[dict]:
    """One row per artifact under ``folder`` (searched recursively; staging folders skipped)."""
    rows = []
    folder = Path(folder)
    manifests = sorted(p for p in folder.rglob(MANIFEST) if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for manifest in manifests:
        try:
            artifact = Artifact(manifest.parent)
        except Exception as exc:  # one broken folder must not hide the others
            log.warning("skipping %s: %s", manifest.parent, exc)
            continue
        report = artifact.read_report()
        m = artifact.manifest
        acc, source = _accuracy(report)
        run = report.get("bench", {}).get("runs", {}).get("artifact", {})
        size = sum(artifact.file(n).stat().st_size for n in m.files if artifact.file(n).is_file())
        rows.append({
            "artifact": artifact.path.relative_to(folder).as_posix() if artifact.path != folder else artifact.path.name,
            "target": m.target,
            "backend": m.backend,
            "precision": m.precision,
            "size MB": size / 2**20,
            "top-1": acc.get("top1"),
            "top-1 95% CI": ci_cell(acc.get("top1_ci")),
            "drop vs FP32": acc.get("top1_drop"),
            "drop 95% CI": ci_cell(acc.get("top1_drop_ci")),
            "agreement %": acc.get("agreement"),
            "agreement 95% CI": ci_cell(acc.get("agreement_ci")),
            "SQNR dB": acc.get("sqnr_db"),
            "accuracy from": f"{source} ({acc.get('videos')} videos{', ' + acc['status'] if acc.get('status', 'ok') != 'ok' else ''})"
            if source else None,
            "p50 ms": run.get("p50_ms"),
            "clips/s": run.get("clips_per_s"),
            "FPS": run.get("video_frames_per_s"),
            "x eager": run.get("speedup_vs_eager"),
            "peak RSS MB": run.get("peak_rss_mb"),
        })
    return rows


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.2f}"
    return str(value)


def ci_cell(ci) -> str | None:
    """A 95% interval as ``[low, high]`` (None without one)."""
    return None if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def value_cell(result: dict, key: str) -> str:
    """A figure with its 95% interval when the result has one (``<key>_ci``)."""
    ci = result.get(f"{key}_ci")
    return cell(result.get(key)) + (f" {ci_cell(ci)}" if ci and result.get(key) is not None else "")


def gate_rows(checks: list[dict]) -> list[str]:
    lines = ["| gate | threshold | checked | value | passed |", "|---|---|---|---|---|"]
    return lines + [f"| {c['gate']} | {cell(c['threshold'])} | {c.get('checked', 'value')} | {cell(c['value'])} | {c['passed']} |"
                    for c in checks]


def markdown_table(rows: list[dict]) -> str:
    header = "| " + " | ".join(rows[0]) + " |"
    rule = "|" + "|".join("---" for _ in rows[0]) + "|"
    body = ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def plot_accuracy_vs_fps(rows: list[dict], path: Path) -> Path | None:
    """Top-1 (or agreement, without labels) against video FPS, one labelled point per artifact.

    Returns None (with a note) when matplotlib is missing or no artifact has both figures.
    """
    metric = "top-1" if any(r["top-1"] is not None and r["FPS"] for r in rows) else "agreement %"
    points = [r for r in rows if r[metric] is not None and r["FPS"]]
    if not points:
        log.warning("no artifact under the folder has both accuracy (eval/golden) and speed (bench): no plot")
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("plot skipped: matplotlib is not installed (pip install 'edgevid[report]')")
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    backends = sorted({r["backend"] for r in points})
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    markers = {"fp32": "o", "fp16": "s", "int8": "D"}
    for r in points:
        ax.scatter(r["FPS"], r[metric], marker=markers.get(r["precision"], "^"), s=60, color=colours[r["backend"]],
                   label=f"{r['backend']} {r['precision']}", edgecolors="black", linewidths=0.5)
        folder = r["artifact"].rsplit("/", 1)[0] if "/" in r["artifact"] else ""
        ax.annotate(r["target"] + (f" ({folder})" if folder else ""), (r["FPS"], r[metric]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("video frames per second (bench, log scale)")
    ax.set_ylabel(f"{metric} ({'eval' if metric == 'top-1' else 'agreement with FP32'})")
    ax.set_title("accuracy vs speed")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_folder_report(folder: str | Path) -> tuple[list[dict], Path, Path | None]:
    """`edgevid report DIR`: the rows, DIR/report.md and DIR/report.png (None when not drawn)."""
    folder = Path(folder)
    rows = collect(folder)
    if not rows:
        return rows, folder / TABLE_FILE, None
    table = folder / TABLE_FILE
    write_text_atomic(table, "# edgevid report\n\n" + markdown_table(rows))
    return rows, table, plot_accuracy_vs_fps(rows, folder / PLOT_FILE)


# --- one artifact --------------------------------------------------------------------------------

_SUMMARY = (("videos", "videos"), ("top1", "top-1 %"), ("top5", "top-5 %"), ("ref_top1", "FP32 top-1 %"),
            ("top1_drop", "drop vs FP32"), ("agreement", "agreement %"), ("cosine", "cosine"),
            ("sqnr_db", "SQNR dB"), ("max_abs_diff", "max |diff|"))


def section_markdown(title: str, result: dict) -> str:
    lines = [f"## {title}", ""]
    what = result.get("data") or result.get("pack") or ""
    lines.append(f"status: **{result.get('status', 'ok')}** on `{what}`" + (f" (shard {result['shard']})" if result.get("shard") else ""))
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {value_cell(result, key)} |" for key, label in _SUMMARY if key in result]
    if result.get("top1_ci"):
        lines += ["", f"[brackets]: 95% confidence intervals; Wilson for top-1, top-5 and agreement"
                  + (f"; the paired drop: {result['top1_drop_method']}, discordant videos lost"
                     f" {result['discordant']['lost']} / gained {result['discordant']['gained']},"
                     f" exact McNemar p {cell(result.get('mcnemar_p'))}" if result.get("top1_drop_ci") else "")]
    checks = result.get("gates", {}).get("checks", [])
    if checks:
        lines += ["", f"gates ({result['gates'].get('source')}):", "", *gate_rows(checks)]
    errors = result.get("errors", [])
    if errors:
        lines += ["", "errors:", ""] + [f"- {e}" for e in errors[:20]]
    wrong = [r for r in result.get("per_video", []) if "ref_pred" in r and r["pred"] != r["ref_pred"]]
    if wrong:
        lines += ["", f"videos whose top-1 differs from the FP32 reference ({len(wrong)}):", ""]
        lines += [f"- {r['video']}: {r['pred']} vs reference {r['ref_pred']} (label {r['label']})" for r in wrong[:20]]
    return "\n".join(lines) + "\n"


def write_artifact_markdown(artifact: Artifact) -> None:
    """<artifact>/report.md from its report.json (eval, golden, regress; bench if present)."""
    report = artifact.read_report()
    m = artifact.manifest
    parts = [f"# {artifact.path.name}\n\n{m.model} for {m.target} ({m.backend} {m.precision})\n"]
    for key, title in (("eval", "eval"), ("golden", "golden run")):
        if isinstance(report.get(key), dict):
            parts.append(section_markdown(title, report[key]))
    if isinstance(report.get("regress"), dict):
        from .regress import regress_markdown

        parts.append(regress_markdown(report["regress"]))
    for shard, result in sorted(report.get("eval_shards", {}).items()):
        parts.append(section_markdown(f"eval shard {shard}", result))
    bench = report.get("bench", {}).get("runs", {})
    if bench:
        parts.append("## bench\n\n| run | p50 ms | clips/s | FPS |\n|---|---|---|---|\n" + "".join(
            f"| {kind} | {cell(r.get('p50_ms'))} | {cell(r.get('clips_per_s'))} | {cell(r.get('video_frames_per_s'))} |\n"
            for kind, r in bench.items()))
    write_text_atomic(artifact.path / TABLE_FILE, "\n".join(parts))


@contextmanager
def report_lock(folder: Path):
    """Serialise read-modify-write of report.json between processes (shards run side by side)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(Path(folder) / ".report.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
