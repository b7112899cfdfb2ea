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
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np

from ..artifact import Artifact, Manifest, PROGRESS_DIR
from ..backends import Runner, open_runner
from ..errors import DataError, EdgevidError
from ..spec import protocol_name, with_protocol
from .errors import NonFiniteOutput, RunIncomplete
from .metrics import aggregate, softmax, video_record  # noqa: F401  (softmax: public API)

log = logging.getLogger("edgevid")

Track = Callable[[Iterable, str, int], Iterable]


def reference_runner(manifest: Manifest, threads: int | None = None, weights_path: str | None = None) -> Runner:
    """PyTorch eager FP32 with the same weights the artifact was built from (sha256 checked)."""
    from ..backends.torch_eager import TorchEagerRunner
    from ..pipeline import reference_model

    return TorchEagerRunner(reference_model(manifest, weights_path), manifest.input_shape, threads)


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
    """Map dataset class indices to the model's label indices: by name (ignoring case, underscores,
    hyphens and spaces: a folder ``playing_guitar`` is the class ``playing guitar``), else, when every
    class is an integer, as the model's class index (checked against its range).

    ``used``: the dataset class indices that videos carry (classes no video has are not checked).
    """
    from ..data.manifest import is_index
    from ..labels import normalise_name

    wanted = [i for i in range(len(dataset_classes)) if used is None or i in used]
    by_key = {}
    for index, name in enumerate(labels):
        by_key.setdefault(normalise_name(name), index)
    if all(normalise_name(dataset_classes[i]) in by_key for i in wanted):
        return np.array([by_key.get(normalise_name(c), -1) for c in dataset_classes])
    if all(is_index(c) for c in dataset_classes):
        outside = [dataset_classes[i] for i in wanted if int(dataset_classes[i]) >= len(labels)]
        if not outside:
            return np.array([int(c) if int(c) < len(labels) else -1 for c in dataset_classes])
        shown = outside[0] if len(outside[0]) <= 24 else outside[0][:20] + "..."
        raise DataError(
            f"--data {data}: label {shown} is outside the model's {len(labels)} classes (0-{len(labels) - 1});"
            " fix the labels or pass a dataset of this model's classes"
        )
    unknown = [dataset_classes[i] for i in wanted if normalise_name(dataset_classes[i]) not in by_key]
    import difflib

    close = difflib.get_close_matches(normalise_name(unknown[0]), list(by_key), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(labels[by_key[k]]) for k in close)}?" if close else ""
    raise DataError(
        f"--data {data}: class {unknown[0]!r} is not one of the model's {len(labels)} labels"
        f" ({', '.join(labels[:4])}, ...).{hint} Rename the folder/label to the model's class name"
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
    keep_logits: bool = False,
    info: dict | None = None,
) -> tuple[list[dict], list[str]]:
    """Run ``items``; return their records and the errors of videos that could not be read.

    Stops at the first NaN/Inf output (``NonFiniteOutput``, carrying ``records`` so far).
    ``keep_logits``: each record also carries the artifact's per-view logits (``"logits"``, an
    array: for a Ray node, whose records the driver completes with the reference). ``info`` receives
    ``runtime``, what actually ran.
    """
    from ..data.views import load_views

    spec = artifact.manifest.spec
    records, errors = [], []
    if not items:
        return records, errors
    runner = open_runner(artifact, threads=threads, mode="throughput")
    if info is not None:
        info["runtime"] = runner.runtime or runner.description
    is_reference = artifact.manifest.backend == "torch_eager"
    reference = None
    if with_reference and not is_reference:
        reference = reference_runner(artifact.manifest, threads, weights_path)
    try:
        for item in track(items, f"eval {artifact.path.name}", len(items)) if track else items:
            try:
                cut = load_views(item.path, spec, "test")
            except (DataError, ValueError) as exc:
                errors.append(f"{item.key}: {exc}")
                continue
            views = cut.inputs
            for note in cut.notes:
                log.debug("%s: %s", item.key, note)
            try:
                out = run_views(runner, views, item.key)
            except NonFiniteOutput as exc:
                exc.records, exc.errors = records, errors
                raise
            ref = out if is_reference else (run_views(reference, views, item.key) if reference else None)
            record = video_record(item.index, item.key, item.label, out, ref, spec.protocol.combine,
                                  cut.notes, cut.padded)
            records.append({**record, "logits": out} if keep_logits else record)
            if on_record:
                on_record(record)
    finally:
        runner.close()
    return records, errors


def reference_logits(artifact: Artifact, items: list[VideoItem], threads: int | None = None) -> tuple[dict, list[str]]:
    """The PyTorch FP32 reference's per-view logits of ``items`` ({index: [V, classes]}) and the
    errors of videos that could not be read (the driver's half of `eval --ray`)."""
    from ..data.views import test_views

    require_reference(artifact, with_reference=True)
    reference = reference_runner(artifact.manifest, threads)
    out, errors = {}, []
    for item in items:
        try:
            views = test_views(item.path, artifact.manifest.spec)
        except (DataError, ValueError) as exc:
            errors.append(f"{item.key}: {exc}")
            continue
        out[item.index] = run_views(reference, views, item.key)
    return out, errors


def require_reference(artifact: Artifact, with_reference: bool, decode: bool = True) -> None:
    """One-line errors, before anything runs, for what eval needs and this install lacks."""
    from ..extras import require

    if decode:
        require("av", "edgevid eval (decoding the videos)")
    if with_reference and artifact.manifest.backend != "torch_eager":
        require("torch", "edgevid eval's FP32 reference",
                hint="or pass --no-reference for accuracy against the labels only, or run a golden pack with"
                     " `edgevid golden run`, whose reference logits were computed where it was made")


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
        "protocol": protocol_name(m.spec),
        "reference": "pytorch eager fp32" if has_ref else None,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
    }


def check_protocol(artifact: Artifact, protocol: str | None) -> None:
    """Refuse an artifact whose test protocol is not ``protocol`` (None: any), naming the rebuild."""
    if protocol is None:
        return
    spec = artifact.manifest.spec
    wanted = protocol_name(with_protocol(spec, protocol))  # an unknown name fails here
    built = protocol_name(spec)
    if wanted != built:
        head = {"softmax": "softmax", "logits": "logits"}[spec.protocol.head_average]
        raise EdgevidError(
            f"--protocol {protocol}: {artifact.path} was built for the {built} protocol (its head averages the"
            f" {head} over positions); build one for {protocol} with"
            f" `{artifact.rebuild_command(protocol=None if wanted == 'default' else wanted)}`")


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
    json_path: str | Path | None = None,
    protocol: str | None = None,
) -> dict:
    """Evaluate with the model's test views; write the result into the artifact's report.json.

    ``protocol`` (e.g. ``slowfast`` for X3D, to compare with a model zoo's published top-1) asks that
    the artifact follows that test protocol; one that was built for another is refused with the
    command that rebuilds it so (the head's averaging is part of the compiled graph).

    ``shard`` ("i/n") evaluates one shard (stored under ``eval_shards``; combine with ``merge``).
    ``ray`` (a Ray address) spreads shards over the cluster's nodes that advertise the artifact's
    target. A run that cannot finish writes a partial report (and ``json_path``) and raises a
    one-line error.
    """
    artifact = Artifact(artifact_path)
    artifact.verify()
    check_protocol(artifact, protocol)
    # with --ray the nodes decode; the driver decodes only for the reference
    require_reference(artifact, with_reference, decode=not ray or with_reference)
    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    items, data_info = dataset_items(data, artifact.labels, limit)
    meta = _meta(artifact, data_info, with_reference, shard)
    todo = shard_of(items, shard)
    started = time.perf_counter()

    if ray:
        records, errors, run = eval_on_ray(ray, artifact, todo, with_reference, threads, ray_shards)
        run["seconds"] = round(time.perf_counter() - started, 2)
        _name_runtime(meta, artifact.manifest, run.get("runtime"))
        if run.get("stopped"):
            partial = result_from(records, meta, errors, run)
            _write(artifact, partial, json_path)
            raise NonFiniteOutput(f"{run['stopped']} ({partial['videos']} of {len(todo)} videos ran; partial report in"
                                  f" {artifact.path / 'report.json'})")
        return _finish(artifact, meta, records, errors, run, len(todo), json_path)

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
    info: dict = {}
    try:
        new, errors = eval_items(artifact, remaining, threads, with_reference, track, progress.append, info=info)
        finished = not errors
    except NonFiniteOutput as exc:
        run["seconds"] = round(time.perf_counter() - started, 2)
        partial = result_from(records + exc.records, meta, [*exc.errors, str(exc)], run)
        _write(artifact, partial, json_path)
        raise NonFiniteOutput(f"{exc} ({partial['videos']} of {len(todo)} videos ran; partial report in"
                              f" {artifact.path / 'report.json'})") from None
    finally:
        progress.close(finished)
    run["seconds"] = round(time.perf_counter() - started, 2)
    _name_runtime(meta, artifact.manifest, info.get("runtime"))
    return _finish(artifact, meta, records + new, errors, run, len(todo), json_path)


def _name_runtime(meta: dict, manifest: Manifest, runtime: str | None) -> None:
    """The report names the runtime that actually ran (a pending TensorRT artifact: ONNX Runtime)."""
    if runtime:
        meta["runtime"] = runtime
        meta["label"] = f"{manifest.backend} {manifest.precision} on {runtime}"


def _finish(artifact: Artifact, meta: dict, records: list[dict], errors: list[str], run: dict,
            expected: int | None = None, json_path: str | Path | None = None) -> dict:
    result = result_from(records, meta, errors, run)
    _write(artifact, result, json_path)
    if errors:
        expected = len(records) + len(errors) if expected is None else expected
        raise RunIncomplete(
            f"{expected - result['videos']} of {expected} video(s) could not be evaluated, first error: {errors[0]};"
            f" the report covers the {result['videos']} that ran ({artifact.path / 'report.json'}); rerun to retry them"
        )
    return result


def _write(artifact: Artifact, result: dict, json_path: str | Path | None = None) -> None:
    from ..outputs import mark, write_output_file
    from ..pipeline import record_report

    if json_path:
        write_output_file(json_path, json.dumps(mark(result, "eval"), indent=2), "eval", "--json")
    if result.get("shard"):
        record_report(artifact, "eval_shards", result, key=result["shard"])
    else:
        record_report(artifact, "eval", result)


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


_COMPUTED = {"status", "videos", "top1", "top5", "padded_videos", "warned_videos", "ref_top1", "agreement", "cosine",
             "sqnr_db", "max_abs_diff", "top1_drop", "errors", "per_video", "run", "top1_ci", "top5_ci", "ref_top1_ci",
             "agreement_ci", "top1_drop_ci", "discordant", "mcnemar_p", "top1_drop_method", "confidence"}


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


def warning_lines(result: dict) -> list[str]:
    """The console's one-line summaries of the data warnings in an eval/golden result."""
    lines = []
    padded = result.get("padded_videos", 0)
    if padded:
        lines.append(f"{padded} video{'s' if padded != 1 else ''} shorter than one clip {'were' if padded != 1 else 'was'}"
                     " padded (last frame repeated, as the official loaders)")
    other = [r for r in result.get("per_video", []) if any(not n.startswith("shorter than one clip") for n in r.get("notes", []))]
    if other:
        first = next(n for n in other[0]["notes"] if not n.startswith("shorter than one clip"))
        lines.append(f"{len(other)} video{'s' if len(other) != 1 else ''} with data warnings, first {other[0]['video']}: {first}"
                     " (all in the report's per_video notes)")
    return lines


# --- on a Ray farm (`eval --ray`) ---------------------------------------------------------------


def _eval_task(artifact_files: dict, videos: dict, items: list[tuple], threads: int | None) -> dict:
    """One shard on a node: decode + run the artifact, return its logits per video (no torch needed:
    the FP32 reference runs on the driver, where torch is)."""
    import ray

    from ..extras import require
    from .farm import where, write_tree

    started = time.perf_counter()
    stopped = None
    require("av", f"eval on node {socket.gethostname()} (decoding the videos)")
    info: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgevid-eval-") as tmp:
        art = Artifact(write_tree(Path(tmp) / "artifact", artifact_files))
        data = write_tree(Path(tmp) / "data", videos)
        todo = [VideoItem(index, key, data.joinpath(*[p if p not in ("..", ".") else "_" for p in PurePosixPath(key.lstrip("/")).parts]), label)
                for index, key, label in items]
        try:
            records, errors = eval_items(art, todo, threads, with_reference=False, keep_logits=True, info=info)
        except NonFiniteOutput as exc:
            records, errors, stopped = exc.records, [*exc.errors, str(exc)], str(exc)
    where = {**where(ray), "videos": len(items), "seconds": round(time.perf_counter() - started, 2),
             "torch_imported": "torch" in sys.modules}
    return {"records": records, "errors": errors, "stopped": stopped, "where": where, "runtime": info.get("runtime")}


def eval_on_ray(address: str, artifact: Artifact, items: list, with_reference: bool, threads: int | None = None,
                shards: int | None = None) -> tuple[list[dict], list[str], dict]:
    """Evaluate ``items`` (``eval.VideoItem``) across the target's devices.

    The nodes need edgevid's device install, the backend's runtime and PyAV (they decode); no torch.
    With ``with_reference`` the PyTorch FP32 reference runs here, on the driver, while the nodes work,
    and each video's record is completed with it (a torch-free driver: pass ``--no-reference``, or
    run a golden pack, whose reference logits were computed where the pack was made).
    """
    from .farm import artifact_blobs, connect, devices, gather, shard_labels, split

    ray = connect(address)
    target = artifact.manifest.target
    count = devices(ray, target, address)
    art_ref = ray.put(artifact_blobs(artifact))
    task = ray.remote(_eval_task)
    futures, groups = [], split(list(items), shards or count)
    for group in groups:
        videos = {item.key: Path(item.path).read_bytes() for item in group}
        futures.append(task.options(resources={target: 1}, scheduling_strategy="SPREAD").remote(
            art_ref, videos, [(item.index, item.key, item.label) for item in group], threads))
    labels = shard_labels(groups)
    refs, ref_errors = reference_logits(artifact, items, threads) if with_reference else ({}, [])
    done, failed = gather(ray, futures, labels)
    records = []
    for d in done:
        for r in d["records"]:
            logits = r.pop("logits")
            if with_reference:
                if r["index"] not in refs:
                    continue  # its reference could not be computed: reported in ref_errors
                r = video_record(r["index"], r["video"], r["label"], logits, refs[r["index"]],
                                 artifact.manifest.spec.protocol.combine, r.get("notes"), bool(r.get("padded")))
            records.append(r)
    errors = [e for d in done for e in d["errors"]] + failed + ref_errors
    runtime = "; ".join(sorted({d["runtime"] for d in done if d.get("runtime")})) or None
    run = {"ray": address, "shards": [d["where"] for d in done], "runtime": runtime,
           "reference": "on the driver" if with_reference else None}
    stopped = next((d["stopped"] for d in done if d["stopped"]), None)
    if stopped:
        run["stopped"] = stopped
    return records, errors, run
