"""Per-layer INT8 sensitivity and the mixed-precision fallback behind `build --max-drop`.

Works for every backend through two hooks (``Backend.quantizable_layers`` and the ``keep_float``
build option, see backends/base.py): the backend names its quantizable layers, and builds INT8
variants that keep a chosen set of them in float. Here we

1. decode the validation videos once and run the FP32 reference on them once;
2. rank the layers: ``quantize-one`` builds, for each layer, a variant where only that layer is
   INT8 and measures the SQNR of the logits against FP32 (lowest first = most sensitive);
   ``keep-float`` builds the full-INT8 variant minus that one layer;
3. keep the top-k of the ranking in float for k = 1, 2, 4 ... and bisect for the smallest k
   whose top-1 drop on the validation split meets the budget;
4. build the real artifact with those layers kept, measure it, and record both in its manifest.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..artifact import Artifact, Manifest, finalize_manifest
from ..pipeline import assemble_manifest
from ..outputs import check_output_file, mark, markdown_marker, write_output_file
from ..calibration import DEFAULT_VAL_SIZE
from ..errors import DataError, EdgevidError
from .metrics import aggregate, fmt_ci, video_record

log = logging.getLogger("edgevid")
Track = Callable[[Iterable, str, int], Iterable]
METHODS = ("quantize-one", "keep-float")
MAX_VAL_BYTES = 2 * 2**30  # beyond this the validation set holds one centre clip per video, not all test views


@dataclass
class ValSet:
    """Preprocessed validation videos with their FP32 reference logits."""

    keys: list[str]
    labels: list[int]
    views: list[np.ndarray]  # per video [V, C, T, H, W]
    ref: list[np.ndarray]  # per video [V, classes]
    source: str
    views_kind: str = "test"
    combine: str = "sum_softmax"  # how views combine (the spec's TestProtocol.combine)

    def __len__(self) -> int:
        return len(self.keys)

    def head(self, n: int | None) -> "ValSet":
        if not n or n >= len(self):
            return self
        return ValSet(self.keys[:n], self.labels[:n], self.views[:n], self.ref[:n], f"{self.source} (first {n})",
                      self.views_kind, self.combine)


def load_valset(spec, reference, data: str | None, size: int | None, track: Track | None = None) -> ValSet:
    """``size`` videos of ``data`` (default for SynthMotion models: its val split), cut into test views
    (or, when those would not fit in ``MAX_VAL_BYTES``, the centre clip of each video)."""
    from ..data.views import single_clip, test_views
    from ..labels import labels_for
    from .eval import dataset_items, run_views

    size = size or DEFAULT_VAL_SIZE
    if data is None:
        if spec.label_set != "synthmotion":
            raise DataError(f"--max-drop / sensitivity need labelled validation videos of {spec.label_set}:"
                            " pass --val-data FOLDER_OR_CSV")
        from ..data.synthmotion import ensure_split

        data = str(ensure_split("val", size))
    items, _ = dataset_items(data, labels_for(spec.label_set, spec.num_classes), size)
    per_video = spec.clip.test_clips * spec.clip.test_crops * int(np.prod(spec.input_shape(1))) * 4
    kind = "test" if per_video * len(items) <= MAX_VAL_BYTES else "center"
    if kind == "center":
        log.info("validating on the centre clip of each video: %d videos x %d test views would need %.1f GB",
                 len(items), spec.clip.test_clips * spec.clip.test_crops, per_video * len(items) / 2**30)
    keys, labels, views, refs = [], [], [], []
    for item in track(items, "validation clips", len(items)) if track else items:
        clip_views = test_views(item.path, spec) if kind == "test" else single_clip(item.path, spec)
        keys.append(item.key)
        labels.append(item.label)
        views.append(clip_views)
        refs.append(run_views(reference, clip_views, f"{item.key} (FP32 reference)"))
    return ValSet(keys, labels, views, refs, str(data), kind, spec.protocol.combine)


def score(runner, val: ValSet) -> dict:
    """Accuracy of ``runner`` on ``val`` against the labels and the FP32 reference."""
    from .errors import NonFiniteOutput
    from .eval import run_views

    records = []
    for i, (key, label, views, ref) in enumerate(zip(val.keys, val.labels, val.views, val.ref)):
        try:
            out = run_views(runner, views, key)
        except NonFiniteOutput:
            return {"videos": len(val), "top1": 0.0, "top1_drop": float("inf"), "agreement": 0.0,
                    "sqnr_db": float("-inf"), "nonfinite": True}
        records.append(video_record(i, key, label, out, ref, val.combine))
    metrics = aggregate(records)
    keys = ("videos", "top1", "ref_top1", "top1_drop", "agreement", "sqnr_db", "cosine",
            "top1_ci", "top1_drop_ci", "agreement_ci", "discordant")
    return {k: metrics[k] for k in keys}


class Workbench:
    """One model + target prepared for INT8 variants: the backend's plan and the validation set."""

    def __init__(
        self,
        model: str,
        target: str,
        weights: str | None = None,
        calib: str | None = None,
        calib_size: int | None = None,
        options: dict[str, Any] | None = None,
        val_data: str | None = None,
        val_size: int | None = None,
        threads: int | None = None,
        track: Track | None = None,
        protocol: str | None = None,
    ):
        from ..backends import BuildRequest, get_backend
        from ..backends.options import validate_options
        from ..backends.torch_eager import TorchEagerRunner
        from ..calibration import calibration_set
        from ..pipeline import prepare_model
        from ..targets import get_target

        self.target = get_target(target)
        if "int8" not in self.target.precisions:
            raise EdgevidError(f"target {self.target.name} has no int8 precision: nothing to keep in float")
        self.backend = get_backend(self.target.backend)
        self.backend.check(for_build=True)
        self.prepared = prepared = prepare_model(model, weights, protocol=protocol)
        self.model, self.spec, self.labels, self.net = prepared.name, prepared.spec, prepared.labels, prepared.net
        self.weights = prepared.weights
        self.threads = threads
        self.track = track
        self.options = validate_options(self.target.backend, dict(options or {}))
        calib_set = calibration_set(calib, self.spec, calib_size, track, self.backend.name)
        self.calib_source = calib_set.source
        reference = TorchEagerRunner(self.net, self.spec.input_shape(1), threads)
        self.val = load_valset(self.spec, reference, val_data, val_size, track)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgevid-mixed-")
        request = BuildRequest(model=self.net, spec=self.spec, target=self.target, precision="int8",
                               out_dir=Path(self._tmp.name), calib=calib_set.clips, options=self.options)
        started = time.perf_counter()
        self.plan = self.backend.int8_plan(request)
        # the user's --keep-float layers stay float in every variant and are not search candidates
        self.user_kept = list(self.options.get("keep_float") or [])
        self.layers = [layer for layer in self.plan.layers if layer.name not in self.user_kept]
        log.info("%s on %s: %d quantizable layers (plan ready in %.1f s)", self.model, self.target.name,
                 len(self.layers), time.perf_counter() - started)
        self.builds = 0

    def variant(self, keep_float: list[str], val: ValSet | None = None) -> dict:
        """Build the INT8 variant keeping ``keep_float`` in float and score it."""
        with tempfile.TemporaryDirectory(dir=self._tmp.name) as tmp:
            result = self.plan.build(list(dict.fromkeys([*self.user_kept, *keep_float])), Path(tmp))
            manifest = assemble_manifest(self.prepared, self.target, self.backend.name, "int8", result, None, None, 0.0,
                                         notes=["mixed-precision search candidate"])
            finalize_manifest(Path(tmp), manifest)
            runner = self.backend.open(Artifact(tmp), threads=self.threads, mode="throughput")
            try:
                metrics = score(runner, val or self.val)
            finally:
                runner.close()
        self.builds += 1
        return metrics

    def close(self) -> None:
        self.plan.close()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sensitivity(bench: Workbench, method: str = "quantize-one", rank_videos: int | None = 32) -> dict:
    """Rank the quantizable layers, most sensitive first."""
    if method not in METHODS:
        raise EdgevidError(f"--method {method}: choose {' or '.join(METHODS)}")
    val = bench.val.head(rank_videos)
    names = [layer.name for layer in bench.layers]
    if not names:
        raise EdgevidError(f"{bench.backend.name} reports no quantizable layer for {bench.model}")
    started = time.perf_counter()
    full = bench.variant([], val)
    rows = []
    layers = bench.layers
    for layer in bench.track(layers, f"sensitivity ({method})", len(layers)) if bench.track else layers:
        keep = [n for n in names if n != layer.name] if method == "quantize-one" else [layer.name]
        metrics = bench.variant(keep, val)
        rows.append({"layer": layer.name, "op": layer.op, "scope": layer.scope, **metrics})
    if method == "quantize-one":  # lowest SQNR when quantized alone = most sensitive
        rows.sort(key=lambda r: (r["sqnr_db"], r["agreement"]))
    else:  # highest SQNR when kept in float alone = most sensitive
        rows.sort(key=lambda r: (-r["sqnr_db"], -r["agreement"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {
        "model": bench.model, "target": bench.target.name, "backend": bench.backend.name,
        "method": method, "options": bench.options, "val": val.source, "videos": len(val),
        "calibration": bench.calib_source, "full_int8": full, "layers": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def search(bench: Workbench, order: list[str] | Callable[[], list[str]], max_drop: float,
           min_agreement: float | None = None) -> tuple[list[str], dict, list[dict]]:
    """The fewest top-ranked layers kept in float so that the top-1 drop is <= ``max_drop`` (and,
    with ``min_agreement``, that many % of the videos keep the FP32 top-1).

    ``order`` (most sensitive first) may be a callable: it is only ranked when full INT8 misses.
    """
    trials: list[dict] = []

    def trial(k: int) -> dict:
        metrics = bench.variant(order[:k] if k else [])
        trials.append({"kept": k, **metrics})
        log.info("keeping %d layer(s) in float: top-1 drop %.2f, agreement %.1f%%, SQNR %.1f dB",
                 k, metrics["top1_drop"], metrics["agreement"], metrics["sqnr_db"])
        return metrics

    def ok(m: dict) -> bool:
        return m["top1_drop"] <= max_drop + 1e-9 and (min_agreement is None or m["agreement"] >= min_agreement - 1e-9)

    naive = trial(0)
    if ok(naive):
        return [], naive, trials
    order = order() if callable(order) else order
    lo, hi = 0, None
    k = 1
    while k <= len(order):
        metrics = trial(k)
        if ok(metrics):
            hi = k
            break
        lo = k
        k = len(order) if k * 2 > len(order) and k < len(order) else k * 2
    if hi is None:
        raise EdgevidError(
            f"--max-drop {max_drop}{f' / --min-agreement {min_agreement}' if min_agreement is not None else ''}: not"
            f" reached even with all {len(order)} ranked layers in float (top-1 drop {trials[-1]['top1_drop']:.2f},"
            f" agreement {trials[-1]['agreement']:.1f}%); the loss is outside the quantized layers, or the validation set is"
            " too small for this budget"
        )
    while hi - lo > 1:  # bisect between the last failure and the first success
        mid = (lo + hi) // 2
        metrics = trial(mid)
        if ok(metrics):
            hi = mid
        else:
            lo = mid
    return order[:hi], naive, trials


def write_ranking(ranking: dict, path: str | Path) -> tuple[Path, Path]:
    """The ranking as JSON and as a Markdown table beside it."""
    path = Path(path)
    check_output_file(path.with_suffix(".md"), "sensitivity", "--out (its .md table)")
    write_output_file(path, json.dumps(mark(ranking, "sensitivity"), indent=2), "sensitivity")
    full = ranking["full_int8"]
    lines = [f"# INT8 sensitivity: {ranking['model']} on {ranking['target']} ({ranking['backend']})", "",
             f"method {ranking['method']}, {ranking['videos']} videos of {ranking['val']}; full INT8: top-1 drop"
             f" {fmt_ci(full['top1_drop'], full.get('top1_drop_ci'))}, agreement"
             f" {fmt_ci(full['agreement'], full.get('agreement_ci'), 1)}%, SQNR {full['sqnr_db']:.1f} dB"
             " ([brackets]: 95% CI; drop: exact McNemar-based, agreement: Wilson)", "",
             "| rank | layer | op | module | SQNR dB | agreement % | top-1 drop |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rank']} | {r['layer']} | {r['op']} | {r['scope']} | {r['sqnr_db']:.1f} | {r['agreement']:.1f} |"
              f" {r['top1_drop']:.2f} |" for r in ranking["layers"]]
    table = path.with_suffix(".md")
    write_output_file(table, markdown_marker("sensitivity") + "\n".join(lines) + "\n", "sensitivity", "--out (its .md table)")
    return path, table


def read_ranking(path: str | Path, bench: Workbench) -> list[str]:
    try:
        ranking = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        raise EdgevidError(f"--sensitivity {path}: not a ranking written by `edgevid sensitivity`") from None
    for key, value in (("model", bench.model), ("target", bench.target.name)):
        if ranking.get(key) != value:
            raise EdgevidError(f"--sensitivity {path} ranks {key} {ranking.get(key)}, not {value}; rerun `edgevid sensitivity`")
    names = {layer.name for layer in bench.layers}
    order = [row["layer"] for row in ranking.get("layers", [])]
    unknown = [n for n in order if n not in names]
    if unknown or not order:
        raise EdgevidError(f"--sensitivity {path} names layers this build does not have ({', '.join(unknown[:3])});"
                           " rerun `edgevid sensitivity` with the same options")
    return order


def build_with_budget(
    model: str,
    target: str,
    max_drop: float,
    weights: str | None = None,
    calib: str | None = None,
    calib_size: int | None = None,
    out: str | Path = "artifacts",
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
    val_data: str | None = None,
    val_size: int | None = None,
    precision: str | None = None,
    method: str = "quantize-one",
    rank_videos: int | None = 32,
    ranking_file: str | Path | None = None,
    threads: int | None = None,
    track: Track | None = None,
    min_agreement: float | None = None,
    sign: str | Path | None = None,
    protocol: str | None = None,
) -> Artifact:
    """`edgevid build --precision int8 --max-drop X`: INT8 with the fewest layers kept in float
    (on top of the user's own ``keep_float`` layers, which always stay float)."""
    from ..backends import get_backend, open_runner
    from ..build import build_artifact
    from ..targets import get_target

    if not 0 <= max_drop < 100:
        raise EdgevidError(f"--max-drop {max_drop}: give the allowed top-1 drop in points, e.g. 1.0")
    if num_classes:
        raise EdgevidError("--max-drop needs the model's own classifier (the validation labels); drop --num-classes")
    options = {k: v for k, v in (options or {}).items() if k not in ("max_drop", "val_data")}
    target_obj = get_target(target)
    if (precision or target_obj.default_precision) != "int8":
        raise EdgevidError(f"--max-drop applies to int8 builds; add --precision int8 (target {target_obj.name}'s"
                           f" default is {target_obj.default_precision})")
    backend = get_backend(target_obj.backend)
    if backend.handles_max_drop and min_agreement is None:
        # the vendor's own accuracy-aware quantization (NNCF accuracy control for OpenVINO)
        return build_artifact(model, target, "int8", weights, calib, calib_size, out, num_classes,
                              options={**options, "max_drop": max_drop, **({"val_data": val_data} if val_data else {}),
                                       **({"val_size": val_size} if val_size else {})},
                              track=track, sign=sign, protocol=protocol)
    started = time.perf_counter()
    with Workbench(model, target, weights, calib, calib_size, options, val_data, val_size, threads, track,
                   protocol) as bench:
        ranking: dict = {"method": "none needed: full INT8 met the budget"}

        def rank() -> list[str]:
            if ranking_file:
                ranking.update(method=f"from {ranking_file}")
                return read_ranking(ranking_file, bench)
            ranking.update(sensitivity(bench, method, rank_videos))
            return [row["layer"] for row in ranking["layers"]]

        kept, naive, trials = search(bench, rank, max_drop, min_agreement)
        val, builds = bench.val, bench.builds
        layers = {layer.name: layer for layer in bench.layers}
    user_kept = list(options.get("keep_float") or [])

    def finish(staged: Path, manifest: Manifest) -> Manifest:
        """Score the staged artifact and record the search in its manifest (before it is sealed and committed)."""
        with open_runner(Artifact(staged), threads=threads, mode="throughput") as runner:
            final = score(runner, val)
        record = {
            "max_drop": max_drop,
            "min_agreement": min_agreement,
            "metric": "top-1 points below the FP32 reference",
            "validation": {"data": val.source, "videos": len(val), "views": val.views_kind},
            "ranking": ranking["method"],
            "naive": {"kept": 0, **naive},
            "kept_float": [{"layer": n, "op": layers[n].op, "scope": layers[n].scope} for n in kept],
            "final": final,
            "reached": final["top1_drop"] <= max_drop + 1e-9
            and (min_agreement is None or final["agreement"] >= min_agreement - 1e-9),
            "trials": trials,
            "variant_builds": builds,
            "search_seconds": round(time.perf_counter() - started, 1),
        }
        m = manifest
        notes = list(m.notes)
        notes.append(f"--max-drop {max_drop}: full INT8 dropped {fmt_ci(naive['top1_drop'], naive.get('top1_drop_ci'))} points;"
                     f" kept {len(kept)} layer(s) in float; final drop {fmt_ci(final['top1_drop'], final.get('top1_drop_ci'))}"
                     f" on {len(val)} validation videos ([95% CI], exact McNemar-based)")
        if not record["reached"]:
            notes.append("the final artifact misses the budget that its search candidate met (non-deterministic calibration?)")
        return m.model_copy(update={"quantization": {**m.quantization, "mixed_precision": record}, "notes": notes})

    return build_artifact(model, target, "int8", weights, calib, calib_size, out,
                          options={**options, "keep_float": list(dict.fromkeys([*user_kept, *kept]))}, track=track,
                          sign=sign, finish=finish, protocol=protocol)
