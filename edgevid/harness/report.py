"""Reports: one artifact's report.md, and `edgevid report DIR` over every artifact under DIR
(a table, plus an accuracy-vs-FPS plot drawn with matplotlib from the ``report`` extra)."""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path

from ..artifact import MANIFEST, Artifact, write_text_atomic
from ..errors import EdgevidError
from ..outputs import check_output_file, markdown_marker, write_output_file
from .metrics import fmt_ci

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
            report = artifact.read_report()
        except EdgevidError as exc:  # one broken folder must not hide the others
            log.warning("skipping %s: %s", manifest.parent, exc)
            continue
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


def _bench_e2e_fps(folder: Path, row: dict) -> float | None:
    """End-to-end video frames/s of ``row``'s artifact from its report.json (``edgevid bench``:
    decode + sample + preprocess + infer per clip), in the unit of the row's model-only "FPS"."""
    if row.get("e2e FPS"):
        return row["e2e FPS"]
    try:
        artifact = Artifact(folder / row["artifact"] if (folder / row["artifact"]).is_dir() else folder)
        run = artifact.read_report().get("bench", {}).get("runs", {}).get("artifact", {})
        clips = run.get("e2e", {}).get("clips_per_s")
        clip = artifact.manifest.spec.clip
        return float(clips) * clip.frames * clip.stride if clips else None
    except Exception as exc:  # a figure the plot cannot show is not an error of the report
        log.debug("no end-to-end figure for %s: %s", row.get("artifact"), exc)
        return None


#: Where a point's label may go, nearest first: (dx, dy) in points from the point.
_LABEL_SPOTS = [(r * dx, r * dy) for r in (7, 14, 24, 38, 56) for dx, dy in
                ((1, 0.6), (1, -0.9), (-1, 0.6), (-1, -0.9), (0, 1.2), (0, -1.6), (1, 1.6), (-1, 1.6), (1, -2), (-1, -2))]


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 8) -> list:
    """Annotate each ``(x, y, text)`` at the nearest spot (``_LABEL_SPOTS``) where its box overlaps
    no other label, no marker and stays inside the axes; a label moved away gets a leader line.
    Returns the annotations (in ``points`` order)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    pad = 2.5 * fig.dpi / 72
    taken = []
    for collection in ax.collections:  # every marker drawn so far
        for offset in collection.get_offsets():
            cx, cy = ax.transData.transform(offset)
            size = 6 * fig.dpi / 72
            taken.append((cx - size, cy - size, cx + size, cy + size))

    def free(box) -> bool:
        x0, y0, x1, y1 = box.x0 - pad, box.y0 - pad, box.x1 + pad, box.y1 + pad
        inside = box.x0 >= axes_box.x0 and box.x1 <= axes_box.x1 and box.y0 >= axes_box.y0 and box.y1 <= axes_box.y1
        return inside and not any(x0 < t[2] and t[0] < x1 and y0 < t[3] and t[1] < y1 for t in taken)

    legend = ax.get_legend()
    if legend is not None:
        box = legend.get_window_extent(renderer)
        taken.append((box.x0, box.y0, box.x1, box.y1))
    annotations = []
    for x, y, text in points:
        chosen = None
        for dx, dy in _LABEL_SPOTS:
            annotation = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                                     ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                     va="bottom" if dy > 0 else "top")
            box = annotation.get_window_extent(renderer)
            if free(box):
                chosen = annotation
                break
            annotation.remove()
        if chosen is None:  # crowded: the first spot, on top (better a label than none)
            dx, dy = _LABEL_SPOTS[0]
            chosen = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize, ha="left",
                                 va="bottom")
            box = chosen.get_window_extent(renderer)
        elif abs(dx) > 10 or abs(dy) > 10:
            chosen.remove()
            chosen = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                                 ha="left" if dx > 0 else "right" if dx < 0 else "center", va="bottom" if dy > 0 else "top",
                                 arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 0, "shrinkB": 3})
            box = chosen.get_window_extent(renderer)
        taken.append((box.x0, box.y0, box.x1, box.y1))
        annotations.append(chosen)
    return annotations


def plot_accuracy_vs_fps(rows: list[dict], path: Path) -> Path | None:
    """Top-1 (or agreement, without labels) against video FPS, one labelled point per artifact:
    filled at ``edgevid bench``'s model-only figure, hollow at its end-to-end figure (decode +
    preprocess + inference, what a user running a video gets), joined by a line. Labels are placed
    where they overlap no other label or marker.

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
        from matplotlib.lines import Line2D
    except ImportError:
        log.warning("plot skipped: matplotlib is not installed (pip install 'edgevid[report]')")
        return None
    folder = Path(path).parent
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    backends = sorted({r["backend"] for r in points})
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    markers = {"fp32": "o", "fp16": "s", "int8": "D"}
    xs = []
    for r in points:
        colour, marker, y = colours[r["backend"]], markers.get(r["precision"], "^"), r[metric]
        e2e = _bench_e2e_fps(folder, r)
        if e2e:
            ax.plot([e2e, r["FPS"]], [y, y], color=colour, lw=0.8, alpha=0.6, zorder=1)
            ax.scatter(e2e, y, marker=marker, s=60, facecolors="white", edgecolors=colour, linewidths=1.2, zorder=2)
            xs.append(e2e)
        ax.scatter(r["FPS"], y, marker=marker, s=60, color=colour, label=f"{r['backend']} {r['precision']}",
                   edgecolors="black", linewidths=0.5, zorder=3)
        xs.append(r["FPS"])
    ax.set_xscale("log")
    low, high = min(xs), max(xs)
    ax.set_xlim(low / 1.6, high * 1.6)  # room for labels either side
    ys = [r[metric] for r in points]
    span = max(max(ys) - min(ys), 1.0)
    ax.set_ylim(min(ys) - 0.25 * span, max(ys) + 0.25 * span)
    labels = []
    for r in points:
        where = r["artifact"].rsplit("/", 1)[0] if "/" in r["artifact"] else ""
        labels.append((r["FPS"], r[metric], r["target"] + (f" ({where})" if where else "")))
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    kinds = [Line2D([], [], marker="o", ls="", color="0.3", label="model-only (bench)"),
             Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="0.3", label="end-to-end (bench)")]
    ax.legend([*unique.values(), *kinds], [*unique.keys(), "model-only (bench)", "end-to-end (bench)"], fontsize=8,
              loc="best")
    ax.set_xlabel("video frames per second (edgevid bench, log scale): filled = model-only, hollow = end-to-end")
    ax.set_ylabel(f"{metric} ({'eval' if metric == 'top-1' else 'agreement with FP32'})")
    ax.set_title("accuracy vs speed")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    place_labels(ax, labels)
    fig.savefig(path, metadata={"Software": "edgevid_output: report"})  # lets the next `edgevid report` replace it
    plt.close(fig)
    return path


def write_folder_report(folder: str | Path) -> tuple[list[dict], Path, Path | None]:
    """`edgevid report DIR`: the rows, DIR/report.md and DIR/report.png (None when not drawn)."""
    folder = Path(folder)
    rows = collect(folder)
    if not rows:
        return rows, folder / TABLE_FILE, None
    table = folder / TABLE_FILE
    check_output_file(folder / PLOT_FILE, "report", "report plot")  # never replace a user's report.png
    write_output_file(table, markdown_marker("report") + "# edgevid report\n\n" + markdown_table(rows), "report", "report table")
    return rows, table, plot_accuracy_vs_fps(rows, folder / PLOT_FILE)


# --- one artifact --------------------------------------------------------------------------------

_SUMMARY = (("videos", "videos"), ("top1", "top-1 %"), ("top5", "top-5 %"), ("ref_top1", "FP32 top-1 %"),
            ("top1_drop", "drop vs FP32"), ("agreement", "agreement %"), ("cosine", "cosine"),
            ("sqnr_db", "SQNR dB"), ("max_abs_diff", "max |diff|"))


def section_markdown(title: str, result: dict) -> str:
    from .eval import reference_line, time_line

    lines = [f"## {title}", ""]
    what = result.get("data") or result.get("pack") or ""
    lines.append(f"status: **{result.get('status', 'ok')}** on `{what}`" + (f" (shard {result['shard']})" if result.get("shard") else ""))
    if result.get("runtime"):
        lines += ["", f"ran on: {result['runtime']}"]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {value_cell(result, key)} |" for key, label in _SUMMARY if key in result]
    if result.get("top1_ci"):
        lines += ["", "[brackets]: 95% confidence intervals; Wilson for top-1, top-5 and agreement"
                  + (f"; the paired drop: {result['top1_drop_method']}, discordant videos lost"
                     f" {result['discordant']['lost']} / gained {result['discordant']['gained']},"
                     f" exact McNemar p {cell(result.get('mcnemar_p'))}" if result.get("top1_drop_ci") else "")]
    run = result.get("run") if isinstance(result.get("run"), dict) else {}
    speed = [f"{run['videos_per_s']:.2f} videos/s" if run.get("videos_per_s") else None,
             f"time: {time_line(run)}" if time_line(run) else None, reference_line(run)]
    if any(speed):
        lines += [""] + [f"{line}  " for line in speed if line]
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
    from filelock import FileLock

    with FileLock(str(Path(folder) / ".report.lock")):
        yield


def regress_markdown(result: dict) -> str:
    m = result["metrics"]
    lines = ["## regress", "", f"status: **{result['status']}** against `{result.get('baseline_file')}`"
             f" ({result['section']}, {m['videos']} common videos)", "",
             "| metric | baseline | current | delta |", "|---|---|---|---|"]
    lines += [f"| {r['metric']} | {cell(r['baseline'])} | {cell(r['current'])} | {cell(r['delta'])} |" for r in result["table"]]
    lines += ["", f"top-1 {fmt_ci(m['top1'], m.get('top1_ci'))}, baseline {fmt_ci(m['baseline_top1'], m.get('baseline_top1_ci'))},"
              f" drop {fmt_ci(m['top1_drop'], m.get('top1_drop_ci'))} points (95% CI, {m.get('top1_drop_method', 'n/a')};"
              f" McNemar p {cell(m.get('mcnemar_p'))}), agreement {fmt_ci(m['agreement'], m.get('agreement_ci'))}%"]
    lines += ["", f"predictions changed: {len(result['changed'])} (newly wrong {len(result['newly_wrong'])},"
              f" newly right {len(result['newly_right'])})"]
    for row in result["changed"][:20]:
        lines.append(f"- {row['video']}: {row['baseline']} -> {row['current']} (label {row['label']})")
    checks = result.get("gates", {}).get("checks", [])
    if checks:
        lines += ["", *gate_rows(checks)]
    return "\n".join(lines) + "\n"
