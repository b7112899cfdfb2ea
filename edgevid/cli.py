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
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from .errors import EdgevidError
from .outputs import check_output_file, mark, markdown_marker, write_output_file

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Quantize, compile and measure video models for edge targets.")


def _width(stream) -> int | None:
    """200 columns when written to a file or a pipe (CI logs, `make demo | tee`) instead of rich's
    80, so the wide tables stay readable; a terminal's own width, or COLUMNS, otherwise."""
    import os

    try:
        piped = not stream.isatty()
    except (AttributeError, ValueError):
        piped = True
    return 200 if piped and "COLUMNS" not in os.environ else None


out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))
log = logging.getLogger("edgevid")


def track(iterable: Iterable, description: str, total: int) -> Iterable:
    """A rich progress bar on stderr (silent when stderr is not a terminal)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as progress:
        yield from progress.track(iterable, total=total, description=description)


class BuildProgress:
    """`edgevid build`'s stages on stderr, one line each (export, rewrite, calibration n/N, lowering,
    compile) with its elapsed time; a finished stage keeps its line and its seconds. Where stderr
    is not a terminal (CI logs, pipes), one plain line per finished stage instead."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(SpinnerColumn(finished_text="[green]done"), TextColumn("{task.description:<18}"),
                                 BarColumn(bar_width=30), TextColumn("{task.fields[count]:>9}"), TimeElapsedColumn(),
                                 console=console, disable=not self.live)
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "BuildProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: str, stage) -> None:
        count = f"{stage.done}/{stage.total}" if stage.total else ""
        if event == "start":
            self._tasks[stage.name] = self.progress.add_task(stage.name, total=stage.total, count=count)
            return
        task = self._tasks.get(stage.name)
        if task is None:
            return
        if event == "advance":
            self.progress.update(task, completed=stage.done, total=stage.total, count=count)
        else:  # end
            self.progress.update(task, completed=stage.total or 1, total=stage.total or 1, count=count)
            self.progress.stop_task(task)
            if not self.live:
                self.console.print(f"[dim]build: {escape(stage.name)} {count + ' ' if count else ''}{stage.seconds:.1f} s[/]")


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


@app.callback()
def _setup(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs."),
    require_signature: Optional[Path] = typer.Option(
        None, "--require-signature", metavar="PUB",
        help="Refuse artifacts and golden packs not signed by this Ed25519 public key (also: EDGEVID_REQUIRE_SIGNATURE=PUB)."),
) -> None:
    import os

    if require_signature is not None:
        from .signing import REQUIRE_ENV, load_public_key

        load_public_key(require_signature, "--require-signature")
        os.environ[REQUIRE_ENV] = str(require_signature.resolve())
    handler = RichHandler(console=err, show_time=False, show_path=False, level=logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    log.setLevel(logging.DEBUG)  # build.log gets everything; the console gets INFO unless --verbose
    if not verbose:  # torchao's import-time notices about GPU kernels a CPU build never uses
        logging.getLogger("torchao").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


PROTOCOL_HELP = ("Test protocol where a family's official codebases differ: X3D `slowfast` (softmax averaged"
                 " over the head's positions, SlowFast's published protocol) or `default` (mean logits, pytorchvideo).")


@app.command()
def models(counts: bool = typer.Option(True, help="Count params/GFLOPs of every variant (meta device).")) -> None:
    """List model variants with clip spec, our param/GFLOP counts and the published figures."""
    from .models import get_entry, list_models
    from .models.flops import count

    table = Table(title="edgevid models: our counts per view at the test clip (1 MAC = 2 FLOPs; papers' 'FLOPs' are MACs)",
                  caption="params M: this network's; the paper's figure beside it where the two differ by more than 1%")
    for col in ("model", "aliases", "clip T x stride @ crop", "views", "params M", "GMACs", "GFLOPs",
                "paper GFLOPs", "top-1", "labels"):
        table.add_column(col, justify="left" if col in ("model", "aliases", "labels") else "right")
    for name in list_models():
        entry = get_entry(name)
        spec, pub = entry.spec, entry.spec.published
        params, gflops = count(name) if counts else (None, None)
        table.add_row(
            name, ", ".join(entry.aliases), f"{spec.clip.frames} x {spec.clip.stride} @ {spec.clip.crop}",
            f"{spec.clip.test_clips}x{spec.clip.test_crops}", params_cell(spec, params / 1e6 if params else None),
            _fmt(gflops / 2 if gflops else None, 2), _fmt(gflops, 2), _fmt(pub.gflops, 2),
            _fmt(pub.top1), spec.label_set,
        )
    out.print(table)


def params_cell(spec, counted_m: float | None = None) -> str:
    """Our parameter count (counted now, else the spec's), with the paper's when they differ > 1%."""
    ours = counted_m if counted_m is not None else spec.params_m
    paper = spec.published.params_m
    if paper is not None and (ours is None or abs(ours - paper) > 0.01 * paper):
        return f"{_fmt(ours, 2)} (paper {_fmt(paper, 2)})"
    return _fmt(ours, 2)


@app.command()
def targets() -> None:
    """List deployment targets and whether each one's backend is installed."""
    from .backends import backend_status
    from .targets import list_targets

    table = Table(title="edgevid targets")
    for col in ("target", "aliases", "backend", "device", "precisions", "default", "backend status"):
        table.add_column(col)
    for t in list_targets():
        # escape: rich markup would eat "[executorch]" in "pip install 'edgevid[executorch]'"
        table.add_row(t.name, ", ".join(t.aliases), t.backend, t.device, ", ".join(t.precisions), t.default_precision,
                      escape(backend_status(t.backend)))
    out.print(table)


@app.command()
def doctor(artifact: Optional[Path] = typer.Argument(None, help="Also check this artifact folder against this machine.")) -> None:
    """Run first on a device: TensorRT, CUDA, pycuda / cuda-python, GPU / DLA, JetPack, ONNX Runtime, OpenVINO,
    ExecuTorch; with ARTIFACT, whether it runs here (runtime, engine fingerprint, Q/DQ parse). Exit 3 if not."""
    from .doctor import report
    from .errors import BackendUnavailable

    rows, why = report(artifact)
    table = Table(title="edgevid doctor" + (f": {artifact}" if artifact else ""))
    for col in ("check", "finding", ""):
        table.add_column(col)
    for what, finding, ok in rows:
        mark = "" if ok is None else ("[green]ok[/]" if ok else "[red]no[/]")
        table.add_row(what, escape(finding), mark)
    out.print(table)
    if why:
        raise BackendUnavailable(f"{artifact} cannot run here: {why}")


@app.command()
def build(
    model: str = typer.Option(..., "--model", "-m", help="Model name or alias (see `edgevid models`)."),
    target: str = typer.Option(..., "--target", "-t", help="Target name or alias (see `edgevid targets`)."),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | int8 (default: the target's)."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint file, or 'random' (speed work only)."),
    calib: Optional[str] = typer.Option(None, help="Calibration videos: a folder, a manifest, or 'synthetic'."),
    calib_size: Optional[int] = typer.Option(None, min=1, help="Number of calibration clips (default: the recipe's)."),
    num_classes: Optional[int] = typer.Option(None, min=1, help="Re-initialise the classifier with this many classes."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Class names of a model trained on a custom label"
                                          " set: one a line (index = line) or JSON; sets the head size, carried in the manifest."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", help="Folder that receives the artifact folder (an existing"
                                 " artifact of the same name is replaced; nothing else ever is)."),
    sign: Optional[Path] = typer.Option(None, "--sign", metavar="KEY", help="Sign the artifact with this Ed25519 private key (`edgevid keygen`)."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="INT8: allowed top-1 drop in points; keeps the fewest, most sensitive layers in float (every backend with the keep_float hook; OpenVINO: NNCF accuracy control)."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Labelled videos (folder or CSV) that --max-drop validates on (default for SynthMotion models: its val split)."),
    device: Optional[str] = typer.Option(None, "--device", help="Compile for this device now (e.g. OpenVINO CPU, GPU, NPU); it must be present."),
    from_onnx: Optional[Path] = typer.Option(None, "--from-onnx", help="TensorRT: build the engine on this device from a host-built artifact's ONNX."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="TensorRT on Jetson: run on this DLA core (GPU fallback, static shapes)."),
    option: list[str] = typer.Option([], "--option", help="Backend option KEY=VALUE (YAML value), e.g. calibrate_method=minmax, op_types_to_quantize=null (quantize every op)."),
    keep_float: list[str] = typer.Option([], "--keep-float", help="INT8: keep these layers in float, named as `edgevid sensitivity` lists them (ONNX nodes for onnxruntime/TensorRT, OpenVINO ops, modules for ExecuTorch); repeat the flag or separate with commas."),
    val_size: Optional[int] = typer.Option(None, "--val-size", min=1, help="--max-drop: validation videos (default 200)."),
    sensitivity_file: Optional[Path] = typer.Option(None, "--sensitivity", help="--max-drop: reuse a ranking written by `edgevid sensitivity`."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="--max-drop: CPU threads for the validation runs."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", help="--max-drop: also keep this % of"
                                                  " validation videos on the FP32 top-1 (e.g. 97)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help=PROTOCOL_HELP),
) -> None:
    """Build an artifact folder for MODEL on TARGET."""
    from .build import build_artifact

    options = {k: v for k, v in {"max_drop": max_drop, "val_data": val_data, "device": device}.items() if v is not None}
    options.update({k: v for k, v in {"from_onnx": from_onnx, "dla_core": dla_core}.items() if v is not None})
    options.update(_parse_options(option))
    if keep_float:
        options["keep_float"] = [name.strip() for value in keep_float for name in value.split(",") if name.strip()]
    if max_drop is not None:  # every backend: the harness's search, or the backend's own accuracy control
        from .harness.mixed import build_with_budget

        if labels is not None:
            raise EdgevidError("--max-drop validates on the model's own label set; build with --labels without"
                               " --max-drop (or keep layers in float with --keep-float)")
        artifact = build_with_budget(model, target, max_drop, weights, calib, calib_size, out_dir, num_classes,
                                     options=options, val_data=val_data, val_size=val_size, precision=precision,
                                     ranking_file=sensitivity_file, threads=threads, track=track,
                                     min_agreement=min_agreement, sign=sign, protocol=protocol)
    else:
        with BuildProgress(err) as progress:
            artifact = build_artifact(model, target, precision, weights, calib, calib_size, out_dir, num_classes,
                                      options=options, sign=sign, labels_file=labels, progress=progress,
                                      protocol=protocol)
    m = artifact.manifest
    err.print(f"[green]built[/] {artifact.path}  ({m.backend} {m.precision}, {m.build_seconds:.1f} s)")
    if m.stage_seconds:
        cpu = m.stage_cpu_seconds
        err.print("[dim]stages: " + ", ".join(f"{escape(k)} {v:.1f} s" + (f" (cpu {cpu[k]:.1f})" if k in cpu else "")
                                              for k, v in m.stage_seconds.items()) + "[/]")
    for note in m.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    out.print(str(artifact.path))


@app.command("eval")
def eval_(
    artifact: str = typer.Argument(..., help="Artifact folder; or `merge` followed by shard results (JSON files"
                                   " and/or the artifact folder whose shards to combine)."),
    merge_paths: Optional[list[Path]] = typer.Argument(None, help="eval merge: shard JSON files / artifact folder."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset: a folder-per-class or a CSV manifest (path,label)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for the runner."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate only the first N videos."),
    shard: Optional[str] = typer.Option(None, "--shard", help="Evaluate shard i of n (1-based, e.g. 2/4): every n-th"
                                        " video; combine with `edgevid eval merge`."),
    restart: bool = typer.Option(False, "--restart", help="Discard the progress of an interrupted run instead of resuming."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Also run the PyTorch FP32 reference"
                                   " (agreement, cosine, SQNR); --no-reference: labels only, no torch needed."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster address: run shards on the nodes advertising"
                                      " this artifact's target (needs edgevid's ray extra)."),
    ray_shards: Optional[int] = typer.Option(None, "--ray-shards", min=1, help="With --ray: number of shards (default: one per device)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the result to this file."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Require the artifact to follow this test"
                                           " protocol, e.g. slowfast for X3D when comparing with SlowFast's published"
                                           " top-1 (refused, with the build command, when it was built for another)."),
) -> None:
    """Top-1/top-5 with the model's test views, and agreement with the FP32 reference (resumable)."""
    from .harness.eval import evaluate, merge_into

    check_output_file(json_path, "eval", "--json")  # before the run, not after it
    if artifact == "merge":
        if not merge_paths:
            raise EdgevidError("eval merge: pass the shard results (JSON files from --json) and/or the artifact folder")
        result, into = merge_into(merge_paths)
        err.print(f"merged {result['run']['merged_shards']} shards" + (f" into {into.path / 'report.json'}" if into else ""))
    else:
        if merge_paths:
            raise EdgevidError(f"eval takes one artifact folder, got extra arguments {[str(p) for p in merge_paths]}")
        if not data:
            raise EdgevidError("eval needs --data MANIFEST (a CSV manifest or a folder per class)")
        result = evaluate(artifact, data, threads=threads, limit=limit, track=track, shard=shard, resume=not restart,
                          ray=ray, ray_shards=ray_shards, with_reference=reference, json_path=json_path,
                          protocol=protocol)
    _print_result(f"eval {Path(result['artifact']).name}  ({escape(result['label'])})" + (f" shard {result['shard']}" if result.get("shard") else ""), result)
    if json_path and artifact == "merge":  # evaluate() writes --json itself, failed runs included
        write_output_file(json_path, json.dumps(mark(result, "eval"), indent=2), "eval", "--json")


def _print_result(title: str, result: dict) -> None:
    if result.get("runtime"):  # what actually ran (a pending TensorRT artifact: ONNX Runtime)
        out.print(f"runtime: {escape(result['runtime'])}", soft_wrap=True, highlight=False)
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    has_ci = any(f"{key}_ci" in result for key in ("top1", "agreement", "top1_drop"))
    if has_ci:
        table.add_column("95% CI", justify="right")
    for key in ("videos", "top1", "top5", "ref_top1", "top1_drop", "agreement", "cosine", "sqnr_db", "max_abs_diff"):
        if key in result:
            row = [key, _fmt(result[key], 4 if key in ("cosine", "max_abs_diff") else 2)]
            ci = result.get(f"{key}_ci")
            table.add_row(*row, *([f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""] if has_ci else []))
    if table.row_count:
        out.print(table)
    if result.get("top1_drop_ci"):
        d = result.get("discordant", {})
        out.print(f"top1_drop CI: {result['top1_drop_method']}; discordant videos lost {d.get('lost')} / gained"
                  f" {d.get('gained')}, exact McNemar p {_fmt(result.get('mcnemar_p'), 3)}")
    from .harness.eval import warning_lines

    for line in warning_lines(result):
        err.print(f"[yellow]warning:[/] {escape(line)}")
    checks = result.get("gates", {}).get("checks", [])
    if checks:
        gates = Table(title=f"gates ({result['gates']['source']})")
        for col in ("gate", "threshold", "checked", "value", "passed"):
            gates.add_column(col)
        for c in checks:
            mark = "-" if c["passed"] is None else ("[green]yes[/]" if c["passed"] else "[red]NO[/]")
            gates.add_row(c["gate"], _fmt(c["threshold"], 2), c.get("checked", "value"), _fmt(c["value"], 2), mark)
        out.print(gates)


def _parse_options(pairs: list[str]) -> dict:
    """--option KEY=VALUE pairs, values read as YAML (null, numbers, lists)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EdgevidError(f"--option {pair}: write KEY=VALUE, e.g. --option calibrate_method=minmax")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise EdgevidError(f"--option {pair}: the value is not valid YAML") from None
    return options


@app.command()
def bench(
    artifact: Optional[Path] = typer.Argument(None, help="Artifact folder (or use --all-targets --model M)."),
    all_targets: bool = typer.Option(False, "--all-targets", help="Build what is missing for every CPU target of this machine and precision, time all in one table."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="With --all-targets: the model."),
    target: list[str] = typer.Option([], "--target", "-t", help="With --all-targets: only these targets (repeatable)."),
    precision: list[str] = typer.Option([], "--precision", help="With --all-targets: only these precisions (repeatable)."),
    weights: Optional[str] = typer.Option(None, help="With --all-targets: weights for builds (default: the reference / cached checkpoint; 'random')."),
    calib: Optional[str] = typer.Option(None, help="With --all-targets: calibration videos for INT8 builds."),
    calib_size: Optional[int] = typer.Option(None, min=1, help="With --all-targets: calibration clips for INT8 builds (default: the recipe's)."),
    out_dir: Path = typer.Option(Path("artifacts"), "--out", help="With --all-targets: where artifacts are found / built."),
    rebuild: bool = typer.Option(False, help="With --all-targets: rebuild artifacts that exist."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for every run (default: the cores this process may use)."),
    baseline: list[str] = typer.Option([], help="Time 'eager' and/or 'compile' PyTorch FP32 in this run (--all-targets default: both)."),
    seconds: float = typer.Option(3.0, min=0.01, help="Minimum timed seconds per measurement."),
    repeats: int = typer.Option(1, min=1, help="Repeat every measurement in rotation; keep the median repeat."),
    e2e: bool = typer.Option(True, help="Also time end-to-end clips (decode + sampling + preprocessing + inference)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every figure to this JSON file."),
    md_path: Optional[Path] = typer.Option(None, "--md", help="Write the table as Markdown to this file."),
) -> None:
    """Latency mean/p50/p90/p99, clips/s, video frames/s, end-to-end, peak RSS, roofline; baselines side by side."""
    from .bench import COLUMNS, bench_all_targets, bench_artifact, cell, header_lines, markdown, table_rows

    progress = lambda what: err.print(f"[dim]bench: {escape(what)}[/]")  # noqa: E731
    check_output_file(json_path, "bench", "--json")  # before the run, not after it
    check_output_file(md_path, "bench", "--md")
    for name in baseline:
        if name not in ("eager", "compile"):
            raise EdgevidError(f"--baseline {name}: choose eager or compile")
    if all_targets:
        if artifact is not None or not model:
            raise EdgevidError("--all-targets needs --model M and no ARTIFACT argument")
        result = bench_all_targets(model, out_dir, threads, target, precision, weights, calib, calib_size,
                                   tuple(baseline) or ("eager", "compile"), seconds, e2e, repeats, rebuild, progress, track)
    else:
        if artifact is None:
            raise EdgevidError("pass an ARTIFACT folder, or --all-targets --model M")
        result = bench_artifact(artifact, threads, tuple(baseline), seconds, e2e, True, repeats, progress)
    for line in header_lines(result):
        err.print(escape(line), soft_wrap=True, highlight=False)
    rows = table_rows(result)
    shown = [c for c in COLUMNS if c not in ("target", "e2e p50 ms", "build s")]  # all of them: --md / --json
    table = Table(title=f"edgevid bench {result['model']}  (threads={result['threads']})")
    for col in shown:
        table.add_column(col, justify="left" if col in ("run", "precision") else "right", no_wrap=col == "run",
                         min_width=max(len(str(r["run"])) for r in rows) if col == "run" else None)
    for row in rows:
        table.add_row(*[escape(cell(row.get(col), col)) for col in shown])
    out.print(table)
    for failure in result.get("failures", []):
        err.print(f"[yellow]failed:[/] {failure['target']} {failure['precision']}: {escape(failure['error'])}", soft_wrap=True)
    for skipped in result.get("skipped_targets", []):
        err.print(f"[dim]skipped {skipped['target']}: {escape(skipped['reason'])}[/]", soft_wrap=True)
    if json_path:
        write_output_file(json_path, json.dumps(mark(result, "bench"), indent=2, default=str), "bench", "--json")
    if md_path:
        write_output_file(md_path, markdown_marker("bench") + markdown(result), "bench", "--md")


@app.command()
def report(folder: Path = typer.Argument(Path("artifacts"), help="Folder holding artifact folders.")) -> None:
    """One table over every artifact under FOLDER (accuracy from eval/golden, speed from bench) and an
    accuracy-vs-FPS plot (FOLDER/report.png; needs matplotlib, from edgevid's report extra)."""
    from .harness.report import write_folder_report

    if not folder.is_dir():
        raise EdgevidError(f"{folder}: no such folder; pass the folder holding artifact folders (--out of build)")
    rows, table_path, plot_path = write_folder_report(folder)
    if not rows:
        raise EdgevidError(f"no artifacts under {folder}; build some with `edgevid build --out {folder}`")
    table = Table(title=f"edgevid report: {folder}")
    intervals = {"top-1": "top-1 95% CI", "drop vs FP32": "drop 95% CI", "agreement %": "agreement 95% CI"}
    columns = [col for col in rows[0] if col not in intervals.values()]  # each interval goes under its figure
    for col in columns:
        wide = max(len(str(row[col])) for row in rows) if col == "artifact" else None  # names are never cut
        table.add_column(col, justify="left" if col in ("artifact", "backend", "precision", "target", "accuracy from") else "right",
                         min_width=wide, no_wrap=col == "artifact")
    for row in rows:
        table.add_row(*[_fmt(row[col], 2) + (f"\n{row[intervals[col]]}" if row.get(intervals.get(col, "")) else "")
                        for col in columns])
    out.print(table)
    err.print(f"wrote {table_path}" + (f" and {plot_path}" if plot_path else " (no plot: see the note above)"))


@app.command()
def keygen(out_prefix: Path = typer.Option(..., "--out", help="Writes OUT.key (private, mode 0600) and OUT.pub (public).")) -> None:
    """Make an Ed25519 key pair for `--sign` (set EDGEVID_KEY_PASSPHRASE to encrypt the private key)."""
    from .signing import generate_keypair

    private, public = generate_keypair(out_prefix)
    err.print(f"[green]wrote[/] {escape(str(private))} (keep it secret: it signs builds) and {escape(str(public))}"
              " (copy it to the devices: --require-signature / EDGEVID_REQUIRE_SIGNATURE)")
    out.print(str(public))


@app.command()
def verify(
    path: Path = typer.Argument(..., help="Artifact folder or golden pack folder."),
    key: Optional[Path] = typer.Option(None, "--key", metavar="PUB", help="Also check its Ed25519 signature against this public key."),
) -> None:
    """Check an artifact or golden pack: every file's sha256, the manifest seal / pack digest, and the signature."""
    from .integrity import verify_folder

    kind, detail = verify_folder(path, key)
    err.print(f"[green]verified[/] {kind} {escape(str(path))}: {escape(detail)}")


golden_app = typer.Typer(no_args_is_help=True, help="Golden packs: fixed inputs + FP32 reference logits, run on the device.")
app.add_typer(golden_app, name="golden")


@golden_app.command("make")
def golden_make(
    model: str = typer.Option(..., "--model", "-m", help="Model name or alias."),
    data: str = typer.Option(..., "--data", help="Labelled videos: a CSV manifest or a folder per class."),
    clips: int = typer.Option(..., "--clips", min=1, help="Number of videos in the pack (the first N of --data)."),
    out_dir: Path = typer.Option(..., "--out", help="Pack folder to write (a new folder; an existing pack only with --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing golden pack at --out (never anything else)."),
    gates_file: Optional[Path] = typer.Option(None, "--gates", help="Gates YAML to ship in the pack (covered by its digest and signature)."),
    sign: Optional[Path] = typer.Option(None, "--sign", metavar="KEY", help="Sign the pack with this Ed25519 private key (`edgevid keygen`)."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint the artifacts are built from, or 'random'."),
    views: str = typer.Option("test", help="test: the model's clips x crops per video (as eval); center: one clip."),
    chunk: int = typer.Option(16, min=1, help="Videos per .npz chunk."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for the FP32 reference."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help=PROTOCOL_HELP),
) -> None:
    """Write a golden pack: preprocessed inputs (.npz chunks), FP32 reference logits, labels, spec, digest."""
    from .harness.golden import load_pack, make_pack

    path = make_pack(model, data, clips, out_dir, weights=weights, views=views, chunk_videos=chunk, threads=threads,
                     track=track, gates_file=gates_file, sign=sign, overwrite=overwrite, protocol=protocol)
    pack = load_pack(path)
    size = sum(p.stat().st_size for p in path.iterdir()) / 2**20
    err.print(f"[green]golden pack[/] {path}: {len(pack.videos)} videos x {pack.info['views_per_video']} views,"
              f" {len(pack.chunks)} chunk(s), {size:.1f} MB")
    out.print(str(path))


@golden_app.command("run")
def golden_run(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    pack: Path = typer.Argument(..., help="Golden pack folder (from `edgevid golden make`)."),
    gates: Optional[Path] = typer.Option(None, "--gates", help="Gates YAML (default: the pack's gates.yaml, then"
                                         " targets/gates/<target>.yaml, then targets/gates/default.yaml)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for the runner."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster address: run the chunks on the nodes"
                                      " advertising this artifact's target (needs edgevid's ray extra)."),
    ray_shards: Optional[int] = typer.Option(None, "--ray-shards", min=1, help="With --ray: number of shards (default: one per device)."),
    adb: Optional[str] = typer.Option(None, "--adb", metavar="[SERIAL]", help="ExecuTorch artifacts: run the pack on"
                                      " the Android phone adb sees (or SERIAL): export a bundle, push, run it with"
                                      " ExecuTorch's executor_runner, pull the outputs, score them here (needs adb and a phone:"
                                      " not exercised by edgevid's tests)."),
    runner: Optional[str] = typer.Option(None, "--runner", help="With --adb: executor_runner built for the phone (a"
                                         " host file to push, or a path on the phone; default: executor_runner in"
                                         " the phone's bundle folder)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the result to this file."),
) -> None:
    """Run a golden pack on this device (numpy + the backend's runtime only); exit 1 when a gate fails."""
    from .harness.golden import raise_for, run_pack

    if adb is not None:
        from .harness.phone import run_over_adb

        result = run_over_adb(artifact, pack, serial=adb or None, runner=runner, threads=threads, gates=gates,
                              json_path=json_path, check=False)
    else:
        result = run_pack(artifact, pack, gates=gates, threads=threads, json_path=json_path, ray=ray,
                          ray_shards=ray_shards, track=track, check=False)
    _print_result(f"golden {artifact.name}  ({result['backend']} {result['precision']}): {result['status']}", result)
    raise_for(result)


@golden_app.command("export")
def golden_export(
    artifact: Path = typer.Argument(..., help="ExecuTorch artifact folder (--target android / ios)."),
    pack: Path = typer.Argument(..., help="Golden pack folder."),
    out_dir: Path = typer.Option(..., "--out", help="Bundle folder to write (what to copy to the phone)."),
    coreml: bool = typer.Option(False, "--coreml", help="Bundle the artifact's Core ML .pte (ios target) instead of"
                                " the XNNPACK one."),
) -> None:
    """Write a phone bundle: ExecuTorch BundledProgram (.bpte) with the pack's inputs and FP32 outputs, the raw
    inputs for executor_runner and run_on_device.sh."""
    from .backends.executorch import COREML_FILE, MODEL_FILE
    from .harness.phone import export_bundle

    path = export_bundle(artifact, pack, out_dir, pte=COREML_FILE if coreml else MODEL_FILE)
    info = json.loads((path / "bundle.json").read_text())
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    err.print(f"[green]bundle[/] {path}: {len(info['cases'])} cases of batch {info['batch']} for {info['artifact']},"
              f" {size:.1f} MB; copy the folder to the phone, run `sh run_on_device.sh RUNNER` there, bring outputs/"
              f" back and run `edgevid golden score {artifact} {pack} --outputs OUTPUTS`")
    out.print(str(path))


@golden_app.command("score")
def golden_score(
    artifact: Path = typer.Argument(..., help="The ExecuTorch artifact folder the bundle was exported from."),
    pack: Path = typer.Argument(..., help="The golden pack the bundle was exported from."),
    outputs: Path = typer.Option(..., "--outputs", help="The outputs folder the phone wrote (case-NNNNN-0.bin)."),
    gates: Optional[Path] = typer.Option(None, "--gates", help="Gates YAML (default: as golden run)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the result to this file."),
) -> None:
    """Score outputs a phone computed for a bundle (numpy only): golden run's figures, gates and report."""
    from .harness.golden import raise_for
    from .harness.phone import score_outputs

    result = score_outputs(artifact, pack, outputs, gates=gates, json_path=json_path, check=False)
    _print_result(f"golden {artifact.name}  ({result['backend']} {result['precision']}): {result['status']}", result)
    raise_for(result)


@golden_app.command("run-bundle")
def golden_run_bundle(
    bundle: Path = typer.Argument(..., help="Bundle folder from `edgevid golden export`."),
    outputs: Path = typer.Option(..., "--outputs", help="Folder to write the outputs to."),
) -> None:
    """Run a bundle's .bpte with ExecuTorch's Python runtime on this host, writing outputs as the phone would
    (a check of the bundle before it goes to a phone)."""
    from .harness.phone import run_bundle_here

    path = run_bundle_here(bundle, outputs)
    err.print(f"wrote {len(list(path.glob('case-*-0.bin')))} outputs to {path}")
    out.print(str(path))


@app.command()
def regress(
    artifact: Path = typer.Argument(..., help="Artifact folder (the new build)."),
    baseline: Path = typer.Option(..., "--baseline", help="report.json of the last good build (or its folder)."),
    data: Optional[str] = typer.Option(None, "--data", help="Run `eval` on this dataset first."),
    pack: Optional[Path] = typer.Option(None, "--pack", help="Run this golden pack first."),
    section: Optional[str] = typer.Option(None, help="Compare 'eval' or 'golden' runs (default: what both have)."),
    gates: Optional[Path] = typer.Option(None, "--gates", help="Gates YAML (max_top1_drop, min_agreement,"
                                         " min_sqnr_db, max_sqnr_loss_db)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for the runner."),
) -> None:
    """Compare the artifact's accuracy with a baseline run on the same videos; exit 1 on a regression."""
    from .harness.metrics import fmt_ci
    from .harness.regress import raise_for, regress as run_regress

    result = run_regress(artifact, baseline, gates=gates, data=data, pack=str(pack) if pack else None,
                         threads=threads, section=section, track=track, check=False)
    table = Table(title=f"regress {artifact.name} vs {baseline} ({result['section']}): {result['status']}")
    for col in ("metric", "baseline", "current", "delta"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for row in result["table"]:
        table.add_row(row["metric"], _fmt(row["baseline"], 2), _fmt(row["current"], 2), _fmt(row["delta"], 2))
    out.print(table)
    m = result["metrics"]
    out.print(f"top-1 {fmt_ci(m['top1'], m.get('top1_ci'))} vs baseline {fmt_ci(m['baseline_top1'], m.get('baseline_top1_ci'))};"
              f" drop {fmt_ci(m['top1_drop'], m.get('top1_drop_ci'))} points (95% CIs: Wilson; the drop"
              f" {m.get('top1_drop_method')}, exact McNemar p {_fmt(m.get('mcnemar_p'), 3)});"
              f" agreement {fmt_ci(m['agreement'], m.get('agreement_ci'))}%")
    out.print(f"predictions changed on {len(result['changed'])} of {result['metrics']['videos']} videos"
              f" (newly wrong {len(result['newly_wrong'])}, newly right {len(result['newly_right'])})")
    _print_result("", {"gates": result["gates"]})
    raise_for(result)


@app.command()
def sensitivity(
    model: str = typer.Option(..., "--model", "-m", help="Model name or alias."),
    target: str = typer.Option(..., "--target", "-t", help="Target with an int8 precision."),
    weights: Optional[str] = typer.Option(None, help="Checkpoint file, or 'random'."),
    calib: Optional[str] = typer.Option(None, help="Calibration videos: a folder, a manifest, or 'synthetic'."),
    calib_size: Optional[int] = typer.Option(None, min=1, help="Number of calibration clips."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Labelled videos to measure on (default for"
                                           " SynthMotion models: its val split)."),
    val_size: int = typer.Option(32, "--val-size", min=1, help="Validation videos per measurement."),
    method: str = typer.Option("quantize-one", help="quantize-one: each layer INT8 alone; keep-float: full INT8"
                               " minus that layer."),
    option: list[str] = typer.Option([], "--option", help="Backend option KEY=VALUE (YAML value)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for the runners."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Ranking JSON to write (a .md table goes beside it;"
                                            " default artifacts/sensitivity/MODEL-TARGET.json)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help=PROTOCOL_HELP),
) -> None:
    """Rank the quantizable layers by what quantizing each one costs (SQNR, agreement, top-1 vs FP32)."""
    from .harness.metrics import fmt_ci
    from .harness.mixed import Workbench, sensitivity as rank, write_ranking

    if out_path is not None:  # before the (long) run
        check_output_file(out_path, "sensitivity", "--out")
        check_output_file(out_path.with_suffix(".md"), "sensitivity", "--out (its .md table)")
    with Workbench(model, target, weights, calib, calib_size, _parse_options(option), val_data, val_size, threads,
                   track, protocol) as bench:
        ranking = rank(bench, method, rank_videos=None)
    path = out_path or Path("artifacts") / "sensitivity" / f"{ranking['model']}-{ranking['target']}.json"
    json_file, md_file = write_ranking(ranking, path)
    full = ranking["full_int8"]
    table = Table(title=f"sensitivity {ranking['model']} on {ranking['target']} ({method}, {ranking['videos']} videos;"
                        f" full INT8: drop {fmt_ci(full['top1_drop'], full.get('top1_drop_ci'))} (95% CI),"
                        f" SQNR {full['sqnr_db']:.1f} dB)")
    for col in ("rank", "layer", "op", "module", "SQNR dB", "agreement %", "top-1 drop"):
        table.add_column(col, justify="right" if col in ("rank", "SQNR dB", "agreement %", "top-1 drop") else "left")
    for row in ranking["layers"][:30]:
        table.add_row(str(row["rank"]), row["layer"], row["op"], row["scope"], _fmt(row["sqnr_db"], 1),
                      _fmt(row["agreement"], 1), _fmt(row["top1_drop"], 2))
    out.print(table)
    err.print(f"wrote {json_file} and {md_file} ({len(ranking['layers'])} layers)")


@app.command()
def trace(
    artifact: Path = typer.Argument(..., help="An INT8 artifact folder (onnx-cpu, or a TensorRT target's Q/DQ ONNX)."),
    data: Optional[str] = typer.Option(None, "--data", help="Videos to run (default for SynthMotion models: its val split)."),
    clips: int = typer.Option(8, "--clips", help="How many videos (their centre clips)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ONNX Runtime."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Trace JSON to write (a .md table goes beside it;"
                                            " default <artifact>/trace.json)."),
) -> None:
    """Per-layer SQNR of an INT8 artifact against FP32: where the quantization error arises and accumulates."""
    from .harness.trace import trace as run_trace, write_trace

    result = run_trace(artifact, data=data, clips=clips, threads=threads)
    json_file, md_file = write_trace(result, out_path or Path(artifact) / "trace.json")
    table = Table(title=f"trace {result['model']} on {result['target']} ({result['backend']}, {result['clips']} clips;"
                        f" logits SQNR {result['logits_sqnr_db']:.1f} dB)")
    for col in ("#", "layer", "op", "SQNR dB"):
        table.add_column(col, justify="right" if col in ("#", "SQNR dB") else "left")
    for row in result["layers"]:
        table.add_row(str(row["index"]), row["layer"], row["op"], _fmt(row["sqnr_db"], 1))
    out.print(table)
    err.print(f"wrote {json_file} and {md_file} ({result['layers_traced']} of {result['layers_quantized']} quantized"
              " layers traced)")


@app.command()
def synth(
    split: str = typer.Option("val", help="train | val | calib | test (disjoint seeds)."),
    n: int = typer.Option(200, min=1, help="Number of clips."),
    root: Optional[Path] = typer.Option(None, help="Where to write (default: $EDGEVID_HOME/datasets)."),
) -> None:
    """Generate (or reuse) a SynthMotion split and print its manifest path."""
    from .data.synthmotion import ensure_split

    out.print(str(ensure_split(split, n, root)))


@app.command()
def demo(
    artifacts: Optional[list[Path]] = typer.Argument(None, help="Artifact folders, or folders holding them (default: artifacts/demo, else artifacts)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind. Anything but 127.0.0.1 exposes the demo to your network: an explicit opt-in."),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="Port (default: Gradio's 7860 or the next free one)."),
    share: bool = typer.Option(False, "--share", help="Also publish a public Gradio share link (explicit opt-in)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads per runner."),
) -> None:
    """Gradio streaming demo: webcam, video file or SynthMotion sample; live top-k and FPS per artifact."""
    import importlib.util

    from .errors import BackendUnavailable
    from .paths import data_file

    if importlib.util.find_spec("gradio") is None:
        raise BackendUnavailable("the demo needs gradio: pip install 'edgevid[demo]'")
    app_file = data_file("demo") / "app.py"
    spec = importlib.util.spec_from_file_location("edgevid_demo_app", app_file)
    if spec is None or not app_file.is_file():
        raise EdgevidError(f"{app_file} is missing; reinstall edgevid or run from a source checkout")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    paths = artifacts or [next((p for p in (Path("artifacts/demo"), Path("artifacts")) if p.is_dir()), Path("artifacts/demo"))]
    err.print(f"demo on http://{host}:{port or 7860} (or the next free port){' + a public share link' if share else ''}")
    module.launch(paths, host=host, port=port, share=share, threads=threads)


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences in a file name ...) shown escaped."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


#: errno values that mean "the disk or folder, not edgevid": one line, exit 2
_DISK_ERRORS = {28: "no space left on the device", 30: "read-only file system", 13: "permission denied",
                122: "disk quota exceeded", 5: "input/output error"}


def _command_name(argv: list[str]) -> str:
    words = [a for a in argv if not a.startswith("-")][:2]
    if words and words[0] not in ("golden",):
        words = words[:1]
    return "edgevid " + " ".join(words) if words else "edgevid"


def _adb_default(argv: list[str]) -> list[str]:
    """``--adb`` with no SERIAL (last, or followed by another option) means adb's only device."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--adb" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "")
            break
    return out


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and a non-zero exit.

    Exit codes: 0 ok; 1 a gate or regression failed; 2 bad input (usage errors too); 3 a missing
    optional dependency (one line naming the extra that installs it: torch on a device install, PyAV
    ...); 130 interrupted (SIGINT); 143 terminated (SIGTERM).
    """
    import signal

    from .extras import from_import_error
    from .outputs import terminate_cleanly

    argv = _adb_default(sys.argv[1:])
    try:
        try:
            with terminate_cleanly():
                code = app(args=argv, standalone_mode=False)  # we print usage errors and map interrupts ourselves
        except ModuleNotFoundError as exc:
            mapped = from_import_error(exc, _command_name(argv))
            if mapped is None:
                raise
            raise mapped from None
    except typer.TyperException as exc:  # usage errors: bad flag, bad value
        if hasattr(exc, "show"):
            exc.show()
        else:
            err.print(f"[red]error:[/] {escape(printable(str(exc)))}", soft_wrap=True, highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:  # typer's name for KeyboardInterrupt / EOF at a prompt
        err.print("[red]interrupted[/]")
        sys.exit(130)
    except EdgevidError as exc:
        err.print(f"[red]error:[/] {escape(printable(str(exc)))}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        err.print(f"[red]error:[/] {_DISK_ERRORS[exc.errno]}{escape(printable(where))}; free space or choose a writable"
                  " --out / --json path", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 128 + signal.SIGTERM:
            err.print("[red]terminated[/]")
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
