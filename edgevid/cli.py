"""The `edgevid` command line (typer + rich)."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Iterable, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import EdgevidError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantize, compile and measure video models for edge targets.")
out = Console()
err = Console(stderr=True)
log = logging.getLogger("edgevid")


def track(iterable: Iterable, description: str, total: int) -> Iterable:
    """A rich progress bar on stderr (silent when stderr is not a terminal)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as progress:
        yield from progress.track(iterable, total=total, description=description)


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs.")) -> None:
    handler = RichHandler(console=err, show_time=False, show_path=False, level=logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    log.setLevel(logging.DEBUG)  # build.log gets everything; the console gets INFO unless --verbose
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


@app.command()
def models(counts: bool = typer.Option(True, help="Count params/GFLOPs of every variant (meta device).")) -> None:
    """List model variants with clip spec, our param/GFLOP counts and the published figures."""
    from .models import get_entry, list_models
    from .models.flops import count

    table = Table(title="edgevid models  (GFLOPs: ours = 2 x MACs per view; published as the authors count)")
    for col in ("model", "aliases", "clip (T x stride @ crop)", "views", "params (M)", "GFLOPs", "published params",
                "published GFLOPs", "top-1", "dataset"):
        table.add_column(col, justify="right" if col not in ("model", "aliases", "dataset") else "left")
    for name in list_models():
        entry = get_entry(name)
        spec, pub = entry.spec, entry.spec.published
        params, gflops = count(name) if counts else (None, None)
        table.add_row(
            name, ", ".join(entry.aliases), f"{spec.clip.frames} x {spec.clip.stride} @ {spec.clip.crop}",
            f"{spec.clip.test_clips}x{spec.clip.test_crops}", _fmt(params / 1e6 if params else None, 2),
            _fmt(gflops, 2), _fmt(pub.params_m, 2), _fmt(pub.gflops, 2), _fmt(pub.top1), spec.label_set,
        )
    out.print(table)


@app.command()
def targets() -> None:
    """List deployment targets and whether each one's backend is installed."""
    from .backends import backend_status
    from .targets import list_targets

    table = Table(title="edgevid targets")
    for col in ("target", "aliases", "backend", "device", "precisions", "default", "backend status"):
        table.add_column(col)
    for t in list_targets():
        table.add_row(t.name, ", ".join(t.aliases), t.backend, t.device, ", ".join(t.precisions), t.default_precision,
                      backend_status(t.backend))
    out.print(table)


@app.command()
def build(
    model: str = typer.Option(..., "--model", "-m", help="Model name or alias (see `edgevid models`)."),
    target: str = typer.Option(..., "--target", "-t", help="Target name or alias (see `edgevid targets`)."),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | int8 (default: the target's)."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint file, or 'random' (speed work only)."),
    calib: Optional[str] = typer.Option(None, help="Calibration videos: a folder, a manifest, or 'synthetic'."),
    calib_size: Optional[int] = typer.Option(None, help="Number of calibration clips (default: the recipe's)."),
    num_classes: Optional[int] = typer.Option(None, help="Re-initialise the classifier with this many classes."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", help="Folder that receives the artifact folder."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="INT8: allowed top-1 drop in points; keeps the most sensitive layers in float (OpenVINO accuracy control)."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Labelled videos (folder or CSV) that --max-drop validates on (default for SynthMotion models: its val split)."),
    device: Optional[str] = typer.Option(None, "--device", help="Compile for this device now (e.g. OpenVINO CPU, GPU, NPU); it must be present."),
    from_onnx: Optional[Path] = typer.Option(None, "--from-onnx", help="TensorRT: build the engine on this device from a host-built artifact's ONNX."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="TensorRT on Jetson: run on this DLA core (GPU fallback, static shapes)."),
) -> None:
    """Build an artifact folder for MODEL on TARGET."""
    from .build import build_artifact

    options = {k: v for k, v in {"max_drop": max_drop, "val_data": val_data, "device": device}.items() if v is not None}
    options.update({k: v for k, v in {"from_onnx": from_onnx, "dla_core": dla_core}.items() if v is not None})
    artifact = build_artifact(model, target, precision, weights, calib, calib_size, out_dir, num_classes,
                              options=options, track=track)
    m = artifact.manifest
    err.print(f"[green]built[/] {artifact.path}  ({m.backend} {m.precision}, {m.build_seconds:.1f} s)")
    for note in m.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    out.print(str(artifact.path))


@app.command("eval")
def eval_(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    data: str = typer.Option(..., "--data", help="Dataset: a folder-per-class or a CSV manifest (path,label)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the runner."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N videos."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the result to this file."),
) -> None:
    """Top-1/top-5 with the model's test views, and agreement with the FP32 reference."""
    from .harness.eval import evaluate

    result = evaluate(artifact, data, threads=threads, limit=limit, track=track)
    table = Table(title=f"eval {artifact.name}  ({result['label']})")
    for key in ("videos", "top1", "top5", "ref_top1", "top1_drop", "agreement", "cosine", "sqnr_db", "max_abs_diff"):
        if key in result:
            table.add_row(key, _fmt(result[key], 4 if key in ("cosine", "max_abs_diff") else 2))
    out.print(table)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))


@app.command()
def bench(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (same for the artifact and the baselines)."),
    baseline: list[str] = typer.Option([], help="Also time 'eager' and/or 'compile' PyTorch FP32 in this run."),
    seconds: float = typer.Option(3.0, help="Minimum timed seconds per measurement."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure to this JSON file."),
) -> None:
    """Latency p50/p90, clips/s, video frames/s and peak RSS; baselines side by side."""
    from .bench import bench_artifact

    result = bench_artifact(artifact, threads, tuple(baseline), seconds)
    table = Table(title=f"bench {artifact.name}  ({result['machine'].get('cpu', '')}, threads={threads or 'default'})")
    for col in ("run", "p50 ms", "p90 ms", "mean ms", "clips/s", "video frames/s", "peak RSS MB", "speed-up"):
        table.add_column(col, justify="right")
    for kind, run in result["runs"].items():
        speedup = " ".join(f"{run[k]:.2f}x vs {k[11:]}" for k in run if k.startswith("speedup_vs_"))
        table.add_row(kind, _fmt(run["p50_ms"], 2), _fmt(run["p90_ms"], 2), _fmt(run["mean_ms"], 2),
                      _fmt(run["clips_per_s"], 2), _fmt(run["video_frames_per_s"], 1), _fmt(run["peak_rss_mb"]), speedup)
    out.print(table)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))


@app.command()
def report(folder: Path = typer.Argument(Path("artifacts"), help="Folder holding artifact folders.")) -> None:
    """One table over every artifact under FOLDER (accuracy from eval, speed from bench)."""
    from .harness.report import collect, markdown_table

    rows = collect(folder)
    if not rows:
        raise EdgevidError(f"no artifacts with reports under {folder}; run `edgevid eval` / `edgevid bench` first")
    table = Table(title=f"edgevid report: {folder}")
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("artifact", "backend", "precision", "target") else "right")
    for row in rows:
        table.add_row(*[_fmt(v, 2) for v in row.values()])
    out.print(table)
    (folder / "report.md").write_text(markdown_table(rows))


@app.command()
def synth(
    split: str = typer.Option("val", help="train | val | calib | test (disjoint seeds)."),
    n: int = typer.Option(200, help="Number of clips."),
    root: Optional[Path] = typer.Option(None, help="Where to write (default: $EDGEVID_HOME/datasets)."),
) -> None:
    """Generate (or reuse) a SynthMotion split and print its manifest path."""
    from .data.synthmotion import ensure_split

    out.print(str(ensure_split(split, n, root)))


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        app()
    except EdgevidError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
