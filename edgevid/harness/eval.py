"""`edgevid eval`: video-level accuracy of an artifact and its agreement with the FP32 reference.

Each video is cut into the model's test views (clips x crops), run, and averaged. Per-video
records (``metrics.video_record``) are appended to a progress file in the artifact folder as
they are produced, so an interrupted run continues where it stopped; ``--shard i/n`` evaluates
every n-th video and ``merge`` combines shard results into exactly what one run gives, because
every figure is aggregated from the records alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..artifact import Artifact, Manifest
from ..backends import Runner, open_runner
from ..errors import DataError, EdgevidError
from .errors import NonFiniteOutput, RunIncomplete
from .metrics import aggregate, compare, softmax, video_record  # noqa: F401  (compare, softmax: public API)

log = logging.getLogger("edgevid")

PROGRESS_DIR = ".progress"
Track = Callable[[Iterable, str, int], Iterable]


def reference_runner(manifest: Manifest, threads: int | None = None, weights_path: str | None = None) -> Runner:
    """PyTorch eager FP32 with the same weights the artifact was built from."""
    import torch

    from ..backends.torch_eager import TorchEagerRunner
    from ..models import create_model
    from ..models.weights import SHIPPED

    weights = manifest.weights
    if weights.random:
        torch.manual_seed(0)  # builds seed random init the same way
        path = None
    elif weights_path:
        path = weights_path
    elif weights.source == "reference":
        path = SHIPPED / f"{manifest.model}.pt"
    else:
        path = weights.source
    model = create_model(manifest.model, num_classes=manifest.spec.num_classes, weights=path and str(path))
    return TorchEagerRunner(model, manifest.input_shape, threads)


def run_views(runner: Runner, views: np.ndarray, what: str = "") -> np.ndarray:
    """Logits [V, classes] for V preprocessed views, batched to the runner's input batch."""
    batch = runner.input_shape[0] if runner.input_shape else 1
    outputs = []
    for start in range(0, len(views), batch):
        chunk = views[start:start + batch]
        if len(chunk) < batch:  # static-batch artifacts: pad the last chunk
            pad = np.zeros((batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            outputs.append(runner(np.concatenate([chunk, pad]))[: len(chunk)])
        else:
            outputs.append(runner(chunk))
    logits = np.concatenate(outputs).astype(np.float32)
    if not np.isfinite(logits).all():
        where = f" on {what}" if what else ""
        raise NonFiniteOutput(
            f"the artifact produced NaN/Inf logits{where}; rebuild it (e.g. keep sensitive layers in float with --max-drop)"
        )
    return logits


def class_mapping(dataset_classes: list[str], labels: list[str], data: str, used: set[int] | None = None) -> np.ndarray:
    """Map dataset class indices to the model's label indices (by name, else by position).

    ``used``: the dataset class indices that videos carry (classes no video has are not checked).
    """
    if all(c in labels for c in dataset_classes):
        return np.array([labels.index(c) for c in dataset_classes])
    if all(c.isdigit() for c in dataset_classes):
        outside = [c for i, c in enumerate(dataset_classes) if int(c) >= len(labels) and (used is None or i in used)]
        if not outside:
            return np.array([int(c) if int(c) < len(labels) else -1 for c in dataset_classes])
        raise DataError(
            f"--data {data}: label {outside[0]} is outside the model's {len(labels)} classes (0-{len(labels) - 1});"
            " fix the labels or pass a dataset of this model's classes"
        )
    unknown = [c for c in dataset_classes if c not in labels]
    raise DataError(
        f"--data {data}: class {unknown[0]!r} is not one of the model's {len(labels)} labels"
        f" ({', '.join(labels[:4])}, ...); use a manifest whose labels are the model's class names"
    )


# --- which videos -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoItem:
    index: int  # position in the (limited) dataset: the key records merge by
    key: str  # path as the dataset lists it (relative to its folder where possible)
    path: Path
    label: int  # the model's class index


def dataset_items(data: str | Path, labels: list[str], limit: int | None = None) -> tuple[list[VideoItem], dict]:
    """The videos to evaluate and a description of them (source, digest, count)."""
    from ..data.manifest import load_dataset

    dataset = load_dataset(data)
    chosen = dataset.items[:limit] if limit else dataset.items
    mapping = class_mapping(dataset.classes, labels, str(data), {label for _, label in chosen})
    source = Path(dataset.source) if dataset.source else Path(data)
    base = source.parent if source.is_file() else source
    items = []
    for index, (path, label) in enumerate(chosen):
        path = Path(path)
        try:
            key = path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            key = str(path)
        items.append(VideoItem(index, key, path, int(mapping[label])))
    if not items:
        raise DataError(f"--data {data}: no videos to evaluate")
    digest = hashlib.sha256("".join(f"{i.key}\t{i.label}\n" for i in items).encode()).hexdigest()
    return items, {"data": str(data), "data_digest": digest, "videos_in_set": len(items)}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1-based: 1/4 ... 4/4) -> (i, n)."""
    if text is None:
        return None
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise EdgevidError(f"--shard {text}: write i/n with 1 <= i <= n, e.g. --shard 1/4 ... --shard 4/4")
    return i, n


def shard_of(items: list, shard: tuple[int, int] | None) -> list:
    """Every n-th item starting at the i-th (classes stay balanced across shards)."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items[i - 1::n])


def artifact_digest(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(sorted(manifest.files.items())).encode()).hexdigest()


# --- running ------------------------------------------------------------------------------------


class Progress:
    """Records appended one JSON line at a time; a run with the same key resumes from them."""

    def __init__(self, folder: Path, key: dict):
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.path = folder / PROGRESS_DIR / f"eval-{self.key}.jsonl"
        self._handle = None

    def load(self) -> dict[int, dict]:
        done: dict[int, dict] = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the interruption
                continue
            if isinstance(record, dict) and "index" in record:
                done[record["index"]] = record
        return done

    def append(self, record: dict) -> None:
        if self._handle is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "a")
            except OSError as exc:
                log.warning("cannot record progress in %s (%s): this run will not be resumable", self.path, exc.strerror)
                self._handle = False
        if self._handle:
            self._handle.write(json.dumps(record) + "\n")
            self._handle.flush()

    def close(self, finished: bool) -> None:
        if self._handle:
            self._handle.close()
        self._handle = None
        if finished:
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()
            except OSError:
                pass


def eval_items(
    artifact: Artifact,
    items: list[VideoItem],
    threads: int | None = None,
    with_reference: bool = True,
    track: Track | None = None,
    on_record: Callable[[dict], None] | None = None,
    weights_path: str | None = None,
) -> tuple[list[dict], list[str]]:
    """Run ``items``; return their records and the errors of videos that could not be read.

    Stops at the first NaN/Inf output (``NonFiniteOutput``, carrying ``records`` so far).
    """
    from ..data.views import test_views

    spec = artifact.manifest.spec
    records, errors = [], []
    if not items:
        return records, errors
    runner = open_runner(artifact, threads=threads, mode="throughput")
    is_reference = artifact.manifest.backend == "torch_eager"
    reference = None
    if with_reference and not is_reference:
        reference = reference_runner(artifact.manifest, threads, weights_path)
    try:
        for item in track(items, f"eval {artifact.path.name}", len(items)) if track else items:
            try:
                views = test_views(item.path, spec)
            except (DataError, ValueError) as exc:
                errors.append(f"{item.key}: {exc}")
                continue
            try:
                out = run_views(runner, views, item.key)
            except NonFiniteOutput as exc:
                exc.records, exc.errors = records, errors
                raise
            ref = out if is_reference else (run_views(reference, views, item.key) if reference else None)
            record = video_record(item.index, item.key, item.label, out, ref)
            records.append(record)
            if on_record:
                on_record(record)
    finally:
        runner.close()
    return records, errors


def result_from(records: list[dict], meta: dict, errors: list[str], run: dict) -> dict:
    """The report section: figures from ``records`` (sorted by index) plus what ran."""
    records = sorted(records, key=lambda r: r["index"])
    status = "ok" if not errors else "failed"
    return {
        "kind": meta.get("kind", "eval"),
        "status": status,
        **{k: v for k, v in meta.items() if k != "kind"},
        **aggregate(records),
        "errors": list(errors),
        "per_video": records,
        "run": run,
    }


def _meta(artifact: Artifact, data_info: dict, with_reference: bool, shard: tuple[int, int] | None) -> dict:
    m = artifact.manifest
    has_ref = with_reference or m.backend == "torch_eager"
    return {
        "kind": "eval",
        "artifact": artifact.path.name,
        "model": m.model,
        "target": m.target,
        "backend": m.backend,
        "precision": m.precision,
        "label": _label(m),
        "artifact_digest": artifact_digest(m),
        **data_info,
        "views_per_video": m.spec.clip.test_clips * m.spec.clip.test_crops,
        "reference": "pytorch eager fp32" if has_ref else None,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
    }


def evaluate(
    artifact_path: str | Path,
    data: str | Path,
    threads: int | None = None,
    limit: int | None = None,
    with_reference: bool = True,
    track: Track | None = None,
    shard: str | tuple[int, int] | None = None,
    resume: bool = True,
    ray: str | None = None,
    ray_shards: int | None = None,
) -> dict:
    """Evaluate with the model's test views; write the result into the artifact's report.json.

    ``shard`` ("i/n") evaluates one shard (stored under ``eval_shards``; combine with ``merge``).
    ``ray`` (a Ray address) spreads shards over the cluster's nodes that advertise the artifact's
    target. A run that cannot finish writes a partial report and raises a one-line error.
    """
    artifact = Artifact(artifact_path)
    artifact.verify()
    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    items, data_info = dataset_items(data, artifact.labels, limit)
    meta = _meta(artifact, data_info, with_reference, shard)
    todo = shard_of(items, shard)
    started = time.perf_counter()

    if ray:
        from .farm import eval_on_ray

        records, errors, run = eval_on_ray(ray, artifact, todo, with_reference, threads, ray_shards)
        run["seconds"] = round(time.perf_counter() - started, 2)
        if run.get("stopped"):
            partial = result_from(records, meta, errors, run)
            _write(artifact, partial)
            raise NonFiniteOutput(f"{run['stopped']} ({partial['videos']} of {len(todo)} videos ran; partial report in"
                                  f" {artifact.path / 'report.json'})")
        return _finish(artifact, meta, records, errors, run)

    progress = Progress(artifact.path, {k: meta[k] for k in ("artifact_digest", "data_digest", "shard", "reference")})
    done = progress.load() if resume else {}
    if not resume:
        progress.path.unlink(missing_ok=True)
    wanted = {item.index for item in todo}
    records = [r for i, r in done.items() if i in wanted]
    remaining = [item for item in todo if item.index not in done]
    if records:
        log.info("resuming %s: %d of %d videos already evaluated", artifact.path.name, len(records), len(todo))
    run = {"resumed_videos": len(records), "progress_file": str(progress.path)}
    finished = False
    try:
        new, errors = eval_items(artifact, remaining, threads, with_reference, track, progress.append)
        finished = not errors
    except NonFiniteOutput as exc:
        run["seconds"] = round(time.perf_counter() - started, 2)
        partial = result_from(records + exc.records, meta, [*exc.errors, str(exc)], run)
        _write(artifact, partial)
        raise NonFiniteOutput(f"{exc} ({partial['videos']} of {len(todo)} videos ran; partial report in"
                              f" {artifact.path / 'report.json'})") from None
    finally:
        progress.close(finished)
    run["seconds"] = round(time.perf_counter() - started, 2)
    return _finish(artifact, meta, records + new, errors, run)


def _finish(artifact: Artifact, meta: dict, records: list[dict], errors: list[str], run: dict) -> dict:
    result = result_from(records, meta, errors, run)
    _write(artifact, result)
    if errors:
        raise RunIncomplete(
            f"{len(errors)} video(s) could not be evaluated, first: {errors[0]}; the report covers the"
            f" {result['videos']} that ran ({artifact.path / 'report.json'}); rerun to retry them"
        )
    return result


def _write(artifact: Artifact, result: dict) -> None:
    from .report import report_lock, write_artifact_markdown

    with report_lock(artifact.path):
        if result.get("shard"):
            shards = artifact.read_report().get("eval_shards", {})
            shards[result["shard"]] = result
            artifact.update_report("eval_shards", shards)
        else:
            artifact.update_report("eval", result)
        write_artifact_markdown(artifact)


# --- merging shards -----------------------------------------------------------------------------


def merge(results: list[dict]) -> dict:
    """Combine shard results (``--shard i/n`` runs) into the result one run would have given."""
    if not results:
        raise EdgevidError("eval merge: no shard results given; pass shard JSON files or an artifact with eval_shards")
    by_shard: dict[str, dict] = {}
    for result in results:
        shard = result.get("shard")
        if not shard:
            raise EdgevidError(f"eval merge: a result of {result.get('artifact')} is not a shard (no 'shard' field)")
        if shard in by_shard and by_shard[shard]["per_video"] != result["per_video"]:
            raise EdgevidError(f"eval merge: shard {shard} is given twice with different results")
        by_shard[shard] = result
    first = next(iter(by_shard.values()))
    for key in ("artifact_digest", "data_digest", "reference"):
        values = {str(r.get(key)) for r in by_shard.values()}
        if len(values) > 1:
            raise EdgevidError(f"eval merge: the shards differ in {key} ({', '.join(sorted(values))[:200]});"
                               " merge shards of one artifact on one dataset")
    n = int(first["shard"].split("/")[1])
    expected = {f"{i}/{n}" for i in range(1, n + 1)}
    if set(by_shard) != expected:
        missing = sorted(expected - set(by_shard), key=lambda s: int(s.split("/")[0]))
        extra = sorted(set(by_shard) - expected)
        what = f"missing shard(s) {', '.join(missing)}" if missing else f"shards of another split: {', '.join(extra)}"
        raise EdgevidError(f"eval merge: {what}; run them with `edgevid eval ARTIFACT --data ... --shard i/{n}`")
    ordered = [by_shard[f"{i}/{n}"] for i in range(1, n + 1)]
    records = [r for result in ordered for r in result["per_video"]]
    errors = [e for result in ordered for e in result.get("errors", [])]
    meta = {k: first[k] for k in first if k not in _COMPUTED}
    meta["shard"] = None
    run = {"merged_shards": n, "seconds": round(sum(r.get("run", {}).get("seconds", 0) for r in ordered), 2)}
    return result_from(records, meta, errors, run)


_COMPUTED = {"status", "videos", "top1", "top5", "ref_top1", "agreement", "cosine", "sqnr_db", "max_abs_diff",
             "top1_drop", "errors", "per_video", "run", "top1_ci", "top5_ci", "ref_top1_ci", "agreement_ci",
             "top1_drop_ci", "discordant", "mcnemar_p", "top1_drop_method", "confidence"}


def merge_into(paths: list[Path]) -> tuple[dict, Artifact | None]:
    """``edgevid eval merge``: shard JSON files and/or one artifact folder (its recorded shards)."""
    results, target = [], None
    for path in paths:
        path = Path(path)
        if path.is_dir():
            if target is not None:
                raise EdgevidError(f"eval merge: give one artifact folder, got {target.path} and {path}")
            target = Artifact(path)
            results.extend(target.read_report().get("eval_shards", {}).values())
        elif path.is_file():
            try:
                loaded = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise EdgevidError(f"eval merge: {path} is not a shard result (JSON written by `edgevid eval --json`)") from None
            results.extend(loaded if isinstance(loaded, list) else [loaded])
        else:
            raise EdgevidError(f"eval merge: {path}: no such file or artifact folder")
    merged = merge(results)
    if target is not None:
        if merged["artifact_digest"] != artifact_digest(target.manifest):
            raise EdgevidError(f"eval merge: the shards evaluated another build than {target.path}; merge them elsewhere")
        _write(target, merged)
    return merged, target


def _label(manifest: Manifest) -> str:
    if manifest.status.get("engine") == "pending on device":
        return f"{manifest.backend} {manifest.precision} (Q/DQ ONNX under ONNX Runtime CPU; engine pending on device)"
    return f"{manifest.backend} {manifest.precision}"


def summary_keys() -> tuple[str, ...]:
    return ("videos", "top1", "top5", "ref_top1", "top1_drop", "agreement", "cosine", "sqnr_db", "max_abs_diff")


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgevidError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgevidError(f"{path}: not a JSON report") from None

