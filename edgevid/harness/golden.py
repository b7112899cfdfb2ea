"""Golden packs: preprocessed inputs + FP32 reference logits + labels, run on the device.

``make_pack`` (host; needs torch and PyAV) writes::

    <pack>/pack.json          model, spec, labels, weights, views, videos, chunks (+ sha256), digest
    <pack>/chunk-0000.npz     inputs [views, C, T, H, W] float32, video [views] int32,
                              ref_logits [views, classes] float32
    <pack>/gates.yaml         (optional, ``--gates`` at make time) the gates this pack is judged by;
                              its sha256 is in pack.json, so the digest covers it
    <pack>/signature.json     (optional, ``--sign KEY``) Ed25519 signature of the digest

``run_pack`` (device) needs numpy, the backend's runtime and this module only: no torch, no PyAV
(for ONNX Runtime, OpenVINO and TensorRT artifacts). It checks the pack's digest and its fit to
the artifact, verifies each chunk before using it, and aggregates records exactly as ``eval``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..artifact import Artifact, sha256_file
from ..errors import EdgevidError
from ..spec import protocol_name
from ..outputs import check_output_file, check_output_folder, commit_folder, mark, write_output_file
from . import gates as gates_mod
from .errors import GateFailed, NonFiniteOutput, PackError, RunIncomplete
from .metrics import aggregate, video_record

log = logging.getLogger("edgevid")

PACK_FILE = "pack.json"
FORMAT = 1
Track = Callable[[Iterable, str, int], Iterable]


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def pack_digest(info: dict) -> str:
    """sha256 of pack.json without its own ``digest`` (chunk hashes are inside, so it covers them)."""
    return hashlib.sha256(_canonical({k: v for k, v in info.items() if k != "digest"})).hexdigest()


# --- making ------------------------------------------------------------------------------------


def write_pack(
    out: str | Path,
    model: str,
    spec,
    labels: list[str],
    weights: dict,
    videos: list[tuple[str, int]],
    inputs_of: Callable[[int], np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
    views: str = "test",
    chunk_videos: int = 16,
    data: dict | None = None,
    reference_info: dict | None = None,
    track: Track | None = None,
    gates_file: str | Path | None = None,
    sign: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a pack atomically: ``inputs_of(i)`` gives video i's views, ``reference`` their logits.

    ``out`` must be new, or an edgevid pack with ``overwrite``. ``gates_file`` is copied in as
    gates.yaml (checked first) and covered by the digest; ``sign`` signs the digest."""
    from ..signing import load_private_key, write_signature

    out = Path(out)
    gates_text = _read_gates_for_pack(gates_file) if gates_file else None
    signing_key = load_private_key(sign) if sign else None
    entries, chunks, shapes = [], [], set()
    padded_count = 0
    buffer: list[tuple[int, np.ndarray, np.ndarray]] = []
    with commit_folder(out, "pack", overwrite=overwrite) as tmp:

        def flush():
            name = f"chunk-{len(chunks):04d}.npz"
            np.savez_compressed(
                tmp / name,
                inputs=np.concatenate([b[1] for b in buffer]),
                video=np.concatenate([np.full(len(b[1]), b[0], dtype=np.int32) for b in buffer]),
                ref_logits=np.concatenate([b[2] for b in buffer]),
            )
            chunks.append({"file": name, "videos": [buffer[0][0], buffer[-1][0] + 1],
                           "views": int(sum(len(b[1]) for b in buffer)), "sha256": sha256_file(tmp / name)})
            buffer.clear()

        order = range(len(videos))
        for i in track(order, "golden pack", len(videos)) if track else order:
            key, label = videos[i]
            cut = inputs_of(i)  # an array, or data.views.Views (inputs + the data layer's warnings)
            notes, padded = list(getattr(cut, "notes", [])), bool(getattr(cut, "padded", False))
            clip_views = np.ascontiguousarray(getattr(cut, "inputs", cut), dtype=np.float32)
            ref = np.asarray(reference(clip_views), dtype=np.float32)
            if not np.isfinite(ref).all():
                raise EdgevidError(f"the FP32 reference gives NaN/Inf on {key}; check the weights")
            shapes.add((len(clip_views), *clip_views.shape[1:]))
            entry = {"index": i, "video": key, "label": int(label), "chunk": len(chunks)}
            if notes:
                entry["notes"] = notes
            if padded:
                entry["padded"] = True
                padded_count += 1
            entries.append(entry)
            buffer.append((i, clip_views, ref))
            if len(buffer) >= chunk_videos:
                flush()
        if buffer:
            flush()
        if padded_count:
            log.warning("%d video%s shorter than one clip %s padded (last frame repeated, as the official loaders)",
                        padded_count, "s" if padded_count != 1 else "", "were" if padded_count != 1 else "was")
        if len(shapes) != 1:
            raise EdgevidError(f"the videos gave views of different shapes {sorted(shapes)}; a pack needs one shape")
        views_per_video, *input_shape = shapes.pop()
        info = {
            "format": FORMAT,
            "model": model,
            "spec": spec.model_dump(mode="json"),
            "labels": list(labels),
            "weights": weights,
            "views": views,
            "views_per_video": int(views_per_video),
            "input_shape": [int(d) for d in input_shape],
            "data": data or {},
            "reference": reference_info or {},
            "videos": entries,
            "chunks": chunks,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if gates_text is not None:
            (tmp / gates_mod.GATES_FILE).write_text(gates_text, encoding="utf-8")
            info["gates"] = {"file": gates_mod.GATES_FILE, "sha256": sha256_file(tmp / gates_mod.GATES_FILE)}
        info["digest"] = pack_digest(info)
        (tmp / PACK_FILE).write_text(json.dumps(info, indent=1))
        if signing_key is not None:
            write_signature(tmp, signing_key, "pack", info["digest"])
    return out


def _read_gates_for_pack(path: str | Path) -> str:
    """The text of a gates file after checking it parses (``--gates`` of golden make)."""
    gates_mod.load_gates(path, flag="--gates")
    return Path(path).read_text(encoding="utf-8")


def make_pack(
    model: str,
    data: str | Path,
    clips: int,
    out: str | Path,
    weights: str | None = None,
    views: str = "test",
    chunk_videos: int = 16,
    threads: int | None = None,
    track: Track | None = None,
    gates_file: str | Path | None = None,
    sign: str | Path | None = None,
    overwrite: bool = False,
    protocol: str | None = None,
) -> Path:
    """`edgevid golden make`: the first ``clips`` videos of ``data``, preprocessed for ``model``."""
    check_output_folder(out, "pack", overwrite)  # before any work
    if gates_file:
        _read_gates_for_pack(gates_file)
    import torch

    from ..backends.torch_eager import TorchEagerRunner
    from ..data.views import load_views
    from ..models import canonical_name, get_spec
    from ..labels import labels_for
    from ..pipeline import prepare_model
    from ..spec import with_protocol
    from .eval import dataset_items, run_views

    if clips <= 0:
        raise EdgevidError(f"--clips must be positive, got {clips}")
    if views not in ("test", "center"):
        raise EdgevidError(f"--views {views}: choose test (the model's clips x crops) or center (one clip)")
    name = canonical_name(model)
    spec = with_protocol(get_spec(name), protocol)  # a bad --protocol fails before any decoding
    items, data_info = dataset_items(data, labels_for(spec.label_set, spec.num_classes), clips)
    if len(items) < clips:
        log.warning("%s has %d videos, fewer than --clips %d: using all of them", data, len(items), clips)
    prepared = prepare_model(name, weights, protocol=protocol)
    spec, labels = prepared.spec, prepared.labels
    runner = TorchEagerRunner(prepared.net, spec.input_shape(1), threads)
    return write_pack(
        out, name, spec, labels,
        prepared.weights.model_dump(mode="json"),
        [(item.key, item.label) for item in items],
        lambda i: load_views(items[i].path, spec, views),
        lambda x: run_views(runner, x, "the reference"),
        views=views, chunk_videos=chunk_videos, data=data_info,
        reference_info={"runner": "pytorch eager fp32", "torch": torch.__version__},
        track=track, gates_file=gates_file, sign=sign, overwrite=overwrite,
    )


# --- loading and checking ----------------------------------------------------------------------


@dataclass
class Pack:
    path: Path
    info: dict

    @property
    def videos(self) -> list[dict]:
        return self.info["videos"]

    @property
    def chunks(self) -> list[dict]:
        return self.info["chunks"]

    def load_chunk(self, index: int) -> dict[str, np.ndarray]:
        """A verified chunk's arrays; ``PackError`` if it is missing, altered or malformed."""
        entry = self.chunks[index]
        path = self.path / entry["file"]
        if not path.is_file():
            raise PackError(f"{path} is missing from the pack")
        if sha256_file(path) != entry["sha256"]:
            raise PackError(f"{path} does not match its sha256 in {PACK_FILE} (altered or corrupt)")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in ("inputs", "video", "ref_logits")}
        n = entry["views"]
        shape = tuple(self.info["input_shape"])
        classes = len(self.info["labels"])
        if arrays["inputs"].shape != (n, *shape) or arrays["ref_logits"].shape != (n, classes) or len(arrays["video"]) != n:
            raise PackError(f"{path} holds arrays of the wrong shape for {PACK_FILE}")
        return arrays


def load_pack(path: str | Path) -> Pack:
    path = Path(path)
    file = path / PACK_FILE
    if not file.is_file():
        raise PackError(f"{path} is not a golden pack (no {PACK_FILE}); make one with `edgevid golden make`")
    try:
        info = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PackError(f"{file} is unreadable; make the pack again with `edgevid golden make`") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise PackError(f"{file}: format {info.get('format') if isinstance(info, dict) else '?'} is not {FORMAT};"
                        " make the pack again with this edgevid's `edgevid golden make`")
    if info.get("digest") != pack_digest(info):
        raise PackError(f"{file} does not match its digest (edited or corrupt); make the pack again with"
                        " `edgevid golden make`")
    _check_schema(file, info)
    _check_pack_files(path, info)
    from ..signing import check_required_signature

    check_required_signature(path, info["digest"], "pack")
    return Pack(path, info)


class _Video(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int = Field(ge=0)
    video: str
    label: int
    chunk: int = Field(ge=0)


class _Chunk(BaseModel):
    model_config = ConfigDict(extra="allow")
    file: str
    videos: list[int]
    views: int = Field(gt=0)
    sha256: str


class _Gates(BaseModel):
    file: Literal["gates.yaml"]
    sha256: str


class _PackInfo(BaseModel):
    """The shape of pack.json: a pack whose digest matches may still have been built by hand."""

    model_config = ConfigDict(extra="allow")
    format: Literal[1]
    model: str
    spec: dict
    labels: list[str] = Field(min_length=1)
    weights: dict
    views: Literal["test", "center"]
    views_per_video: int = Field(gt=0)
    input_shape: list[int] = Field(min_length=4, max_length=4)
    data: dict = {}
    reference: dict = {}
    videos: list[_Video] = Field(min_length=1)
    chunks: list[_Chunk] = Field(min_length=1)
    gates: _Gates | None = None


def _check_schema(file: Path, info: dict) -> None:
    try:
        parsed = _PackInfo.model_validate(info)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise PackError(f"{file} is malformed ({where}: {error['msg']}); make the pack again with `edgevid golden make`") from None
    if any(v.chunk >= len(parsed.chunks) for v in parsed.videos) or \
            sum(c.views for c in parsed.chunks) != len(parsed.videos) * parsed.views_per_video or \
            sorted(v.index for v in parsed.videos) != list(range(len(parsed.videos))):
        raise PackError(f"{file} is inconsistent (videos, chunks and views do not add up); make the pack again with"
                        " `edgevid golden make`")
    if any(d <= 0 for d in parsed.input_shape):
        raise PackError(f"{file} is malformed (input_shape {parsed.input_shape}); make the pack again with `edgevid golden make`")


def _check_pack_files(path: Path, info: dict) -> None:
    """Every chunk name is a plain file name; gates.yaml is the one the digest covers; nothing else was added."""
    chunk_names = set()
    for chunk in info.get("chunks", []):
        name = chunk.get("file") if isinstance(chunk, dict) else None
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") or not name.endswith(".npz"):
            raise PackError(f"{path / PACK_FILE} lists chunk {name!r}, not a file of the pack; make the pack again")
        chunk_names.add(name)
    gates_path = path / gates_mod.GATES_FILE
    covered = info.get("gates")
    if covered:
        if not gates_path.is_file():
            raise PackError(f"{gates_path} is missing from the pack; make the pack again with `edgevid golden make --gates`")
        if sha256_file(gates_path) != covered.get("sha256"):
            raise PackError(f"{gates_path} does not match its sha256 in {PACK_FILE} (edited after the pack was made);"
                            " make the pack again with `edgevid golden make --gates FILE`, or pass --gates to `golden run`")
    elif gates_path.exists():
        raise PackError(f"{gates_path} is not covered by the pack's digest (added after the pack was made); make the"
                        " pack with `edgevid golden make --gates FILE`, or move it out and pass --gates FILE")
    allowed = {PACK_FILE, gates_mod.GATES_FILE, "signature.json", *chunk_names}
    extra = sorted(p.name for p in path.iterdir() if p.name not in allowed)
    if extra:
        raise PackError(f"{path} holds files that are not part of the pack ({', '.join(extra[:3])}); remove them")


def check_fit(pack: Pack, artifact: Artifact) -> None:
    """Refuse a pack made for another model, spec, label set or weights (nothing runs)."""
    import shlex

    m, info = artifact.manifest, pack.info
    spec = m.spec.model_dump(mode="json")
    chosen = protocol_name(m.spec)
    remake = (f"make a pack for it with `edgevid golden make --model {m.model} --weights {shlex.quote(m.weights.flag)}"
              + ("" if chosen == "default" else f" --protocol {chosen}") + " --data VIDEOS --clips N --out NEW_PACK`")
    if info["model"] != m.model:
        raise PackError(f"pack {pack.path} was made for model {info['model']}, the artifact is {m.model}; {remake}")
    packed = info["spec"]
    try:  # fills fields that a pack from an older edgevid predates with their defaults
        packed = type(m.spec).model_validate(packed).model_dump(mode="json")
    except ValueError:
        pass
    for field in ("clip", "norm", "num_classes", "layout", "training_fps", "protocol"):
        if packed.get(field) != spec.get(field):
            raise PackError(f"pack {pack.path} was made for another {m.model} spec ({field}: {packed.get(field)}"
                            f" vs the artifact's {spec.get(field)}); {remake}")
    if list(info["input_shape"]) != list(m.input_shape[1:]):
        raise PackError(f"pack {pack.path} holds inputs {info['input_shape']}, the artifact takes {m.input_shape[1:]}; {remake}")
    if info["labels"] != m.labels:
        raise PackError(f"pack {pack.path} uses other class names than the artifact; {remake}")
    classes = len(m.labels)
    for video in info["videos"]:
        if not 0 <= int(video["label"]) < classes:
            raise PackError(f"pack {pack.path}: video {video['video']} has label {video['label']}, outside the"
                            f" model's {classes} classes (0-{classes - 1}); {remake}")
    weights = info["weights"]
    if bool(weights.get("random")) != m.weights.random or (not m.weights.random and weights.get("sha256") != m.weights.sha256):
        built = "random weights" if m.weights.random else f"weights {m.weights.source}"
        raise PackError(f"pack {pack.path}'s reference logits come from other weights ({weights.get('source')}) than"
                        f" the artifact ({built}); {remake}")


# --- running -----------------------------------------------------------------------------------


def run_chunks(artifact: Artifact, pack: Pack, chunk_ids: list[int], threads: int | None = None,
               track: Track | None = None) -> dict:
    """Run the given chunks; a bad chunk is reported and skipped, NaN/Inf stops the run.

    Returns ``{"records", "errors", "chunks": {id: status}, "stopped", "runtime"}``: plain data, so a
    Ray worker can send it back (``runtime``: what actually ran, e.g. "onnxruntime 1.32.0 (CPU)").
    """
    from ..backends import open_runner
    from .eval import run_views

    records, errors, status = [], [], {}
    stopped = None
    combine = ((pack.info.get("spec") or {}).get("protocol") or {}).get("combine", "sum_softmax")
    runner = open_runner(artifact, threads=threads, mode="throughput")
    runtime = runner.runtime or runner.description
    try:
        ids = list(chunk_ids)
        for cid in track(ids, f"golden {artifact.path.name}", len(ids)) if track else ids:
            try:
                arrays = pack.load_chunk(cid)
            except PackError as exc:
                errors.append(str(exc))
                status[cid] = "skipped: " + str(exc).split(" (")[0].split(f"{pack.path}/")[-1]
                continue
            try:
                for video in [v for v in pack.videos if v["chunk"] == cid]:
                    rows = arrays["video"] == video["index"]
                    out = run_views(runner, arrays["inputs"][rows], video["video"])
                    records.append(video_record(video["index"], video["video"], video["label"], out,
                                                arrays["ref_logits"][rows], combine, video.get("notes"),
                                                bool(video.get("padded"))))
            except NonFiniteOutput as exc:
                errors.append(str(exc))
                status[cid] = "stopped: NaN/Inf"
                stopped = str(exc)
                break
            status[cid] = "ok"
    finally:
        runner.close()
    return {"records": records, "errors": errors, "chunks": {str(k): v for k, v in status.items()}, "stopped": stopped,
            "runtime": runtime}


def run_pack(
    artifact_path: str | Path,
    pack_path: str | Path,
    gates: str | Path | None = None,
    threads: int | None = None,
    json_path: str | Path | None = None,
    ray: str | None = None,
    ray_shards: int | None = None,
    track: Track | None = None,
    check: bool = True,
    outcome_of: Callable[[Artifact, Pack, list[int]], dict] | None = None,
) -> dict:
    """`edgevid golden run`: compare the artifact with the pack's reference and labels, apply gates.

    ``outcome_of(artifact, pack, chunk_ids)`` replaces running the chunks here (a ``run_chunks``-like
    outcome from elsewhere: outputs a phone computed, see ``harness.phone``).

    The result goes into the artifact's report.json (section ``golden``) and ``json_path``, even
    when the run fails; then (with ``check``, else via ``raise_for``) it raises ``GateFailed``
    (exit 1) or a one-line error naming what went wrong (exit 2). A pack that does not fit the
    artifact raises before anything runs.
    """
    started = time.perf_counter()
    check_output_file(json_path, "golden", "--json")  # before the run, not after it
    artifact = Artifact(artifact_path)
    m = artifact.manifest
    meta = {"kind": "golden", "artifact": artifact.path.name, "model": m.model, "target": m.target,
            "backend": m.backend, "precision": m.precision, "pack": str(pack_path)}
    try:
        artifact.verify()
        pack = load_pack(pack_path)
        check_fit(pack, artifact)
        gate_set, gate_source = gates_mod.find_gates(gates, Path(pack_path), m.target)
        gate_set = gate_set.for_precision(m.precision)
    except EdgevidError as exc:
        _save(artifact, {**meta, "status": "failed", "videos": 0, "errors": [str(exc)],
                         "ran": "nothing: refused before running"}, json_path)
        raise
    meta.update(pack_digest=pack.info["digest"], data=pack.info.get("data", {}).get("data"),
                data_digest=pack.info.get("data", {}).get("data_digest"), views=pack.info["views"],
                views_per_video=pack.info["views_per_video"], reference=pack.info["reference"].get("runner"),
                videos_in_pack=len(pack.videos))
    ids = list(range(len(pack.chunks)))
    if outcome_of is not None:
        outcome = outcome_of(artifact, pack, ids)
    elif ray:
        outcome = golden_on_ray(ray, artifact, pack, ids, threads, ray_shards)
    else:
        outcome = run_chunks(artifact, pack, ids, threads, track)
    records = sorted(outcome["records"], key=lambda r: r["index"])
    metrics = aggregate(records)
    rows = gates_mod.check(metrics, gate_set)
    bad = gates_mod.failed(rows)
    status = "failed" if outcome["errors"] else ("gates failed" if bad else "ok")
    result = {
        **meta,
        "status": status,
        "runtime": outcome.get("runtime"),
        **metrics,
        "gates": {"source": gate_source, "checks": rows, "passed": not bad and not outcome["errors"]},
        "errors": outcome["errors"],
        "chunks": outcome["chunks"],
        "per_video": records,
        "run": {"seconds": round(time.perf_counter() - started, 2), **outcome.get("run", {})},
    }
    result["report"] = str(json_path or artifact.path / "report.json")
    _save(artifact, result, json_path)
    if check:
        raise_for(result)
    return result


def raise_for(result: dict) -> None:
    """Raise the error a finished golden run stands for (nothing when it passed)."""
    if result["errors"]:
        ran = f"{result['videos']} of {result['videos_in_pack']} videos ran"
        stopped = any("NaN/Inf" in str(v) for v in result["chunks"].values())
        raise (NonFiniteOutput if stopped else RunIncomplete)(
            f"{result['errors'][0]} ({ran}; {len(result['errors'])} error(s); partial report in {result['report']})")
    bad = gates_mod.failed(result["gates"]["checks"])
    if bad:
        raise GateFailed(f"golden run of {result['artifact']} failed its gates ({result['gates']['source']}):"
                         f" {gates_mod.describe(bad)}")


def _save(artifact: Artifact, result: dict, json_path: str | Path | None) -> None:
    from ..pipeline import record_report

    if json_path:
        write_output_file(json_path, json.dumps(mark(result, "golden"), indent=2), "golden", "--json")
    try:
        record_report(artifact, "golden", result)
    except OSError as exc:  # a read-only artifact folder on the device
        log.warning("could not write %s (%s)", artifact.path / "report.json", exc.strerror)


# --- on a Ray farm (`golden run --ray`) ---------------------------------------------------------


def _golden_task(artifact_files: dict, pack_files: dict, chunk_ids: list[int], threads: int | None) -> dict:
    import ray

    from .farm import write_tree, where

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgevid-golden-") as tmp:
        art = Artifact(write_tree(Path(tmp) / "artifact", artifact_files))
        pack = load_pack(write_tree(Path(tmp) / "pack", pack_files))
        outcome = run_chunks(art, pack, chunk_ids, threads)
    outcome["where"] = {**where(ray), "chunks": chunk_ids, "seconds": round(time.perf_counter() - started, 2)}
    return outcome


def golden_on_ray(address: str, artifact: Artifact, pack, chunk_ids: list[int], threads: int | None = None,
                  shards: int | None = None) -> dict:
    """Run a pack's chunks across the target's devices; the same outcome as ``run_chunks``."""
    from .farm import artifact_blobs, connect, devices, gather, split

    ray = connect(address)
    target = artifact.manifest.target
    shards = shards or devices(ray, target, address)
    devices(ray, target, address)  # also when --shards is given: a target with no node would wait forever
    art_ref = ray.put(artifact_blobs(artifact))
    pack_json = (pack.path / "pack.json").read_bytes()
    task = ray.remote(_golden_task)
    futures, groups, errors, status = [], [], [], {}
    for group in split(list(chunk_ids), shards):
        files = {"pack.json": pack_json}
        for cid in group:
            path = pack.path / pack.chunks[cid]["file"]
            if path.is_file():  # a missing chunk is reported by the node (it verifies every chunk)
                files[path.name] = path.read_bytes()
        futures.append(task.options(resources={target: 1}, scheduling_strategy="SPREAD")
                       .remote(art_ref, files, group, threads))
        groups.append(group)
    done, failed = gather(ray, futures, groups)
    records = [r for d in done for r in d["records"]]
    errors = [e for d in done for e in d["errors"]] + failed
    for d in done:
        status.update(d["chunks"])
    stopped = next((d["stopped"] for d in done if d["stopped"]), None)
    runtime = "; ".join(sorted({d["runtime"] for d in done if d.get("runtime")})) or None
    return {"records": records, "errors": errors, "chunks": status, "stopped": stopped, "runtime": runtime,
            "run": {"ray": address, "shards": [d["where"] for d in done]}}
