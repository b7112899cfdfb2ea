"""A device farm on Ray: run eval / golden shards on the cluster nodes that have the target.

Each device host joins the cluster advertising a custom resource named after its target::

    ray start --address HEAD:6379 --resources '{"jetson-orin": 1}'

``--ray ADDRESS`` then sends one task per shard, each asking for ``{target: 1}`` (so a device
runs one shard at a time, and only devices of that target get one), with the artifact's files
and the shard's inputs (pack chunks, or video files) shipped through Ray's object store: the
hosts need edgevid and the backend's runtime, not a shared file system. Each task verifies the
artifact and its chunks on the node and returns per-video records; the driver aggregates them
exactly as a single-machine run does.
"""

from __future__ import annotations

import logging
import socket
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

from ..artifact import MANIFEST, Artifact
from ..errors import BackendUnavailable, EdgevidError, first_line

log = logging.getLogger("edgevid")


def connect(address: str):
    """The ``ray`` module, connected to the cluster at ``address`` (``auto`` = the local one)."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailable("--ray needs Ray: pip install 'edgevid[ray]'") from None
    if not ray.is_initialized():
        _probe(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EdgevidError(f"--ray {address}: cannot join the Ray cluster ({first_line(exc, 200)});"
                               " start one with `ray start --head` and pass its address") from None
    return ray


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, with one line, when nothing listens at ``host:port`` (Ray itself retries for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EdgevidError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc});"
                           " start one with `ray start --head` and pass its address") from None


def devices(ray, target: str, address: str) -> int:
    """How many devices of ``target`` the cluster advertises; a clear error when none."""
    count = int(ray.cluster_resources().get(target, 0))
    if count <= 0:
        raise EdgevidError(
            f"--ray {address}: no node of the cluster advertises the resource {target!r}; on each {target}"
            f" host run `ray start --address {address} --resources '{{\"{target}\": 1}}'`"
        )
    return count


def artifact_blobs(artifact: Artifact) -> dict[str, bytes]:
    names = [MANIFEST, *artifact.manifest.files]
    return {name: (artifact.path / name).read_bytes() for name in names if (artifact.path / name).is_file()}


def _write_tree(root: Path, blobs: dict[str, bytes]) -> Path:
    for name, data in blobs.items():
        rel = PurePosixPath(name.lstrip("/"))
        parts = [p if p not in ("..", ".") else "_" for p in rel.parts]
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _where(ray) -> dict:
    return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def shard_labels(groups: list[list]) -> list[str]:
    """'2/3 (67 videos)': shards are strided (every n-th video), so no index range describes them."""
    return [f"{i + 1}/{len(groups)} ({len(g)} video{'s' if len(g) != 1 else ''})" for i, g in enumerate(groups)]


def _split(items: list, shards: int) -> list[list]:
    groups = [items[i::shards] for i in range(shards)]
    return [g for g in groups if g]


def _gather(ray, futures: list, shards: list) -> tuple[list[dict], list[str]]:
    """Results of the tasks; a task that failed on its node becomes an error line."""
    done, errors = [], []
    for future, shard in zip(futures, shards):
        try:
            done.append(ray.get(future))
        except Exception as exc:  # RayTaskError, a lost node ...
            cause = getattr(exc, "cause", None) or exc
            line = str(cause).strip().splitlines()
            errors.append(f"shard {shard} failed on its node: {line[-1] if line else type(cause).__name__}")
    return done, errors


# --- golden packs --------------------------------------------------------------------------------


def _golden_task(artifact_files: dict, pack_files: dict, chunk_ids: list[int], threads: int | None) -> dict:
    import ray

    from .golden import load_pack, run_chunks

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgevid-golden-") as tmp:
        art = Artifact(_write_tree(Path(tmp) / "artifact", artifact_files))
        pack = load_pack(_write_tree(Path(tmp) / "pack", pack_files))
        outcome = run_chunks(art, pack, chunk_ids, threads)
    outcome["where"] = {**_where(ray), "chunks": chunk_ids, "seconds": round(time.perf_counter() - started, 2)}
    return outcome


def golden_on_ray(address: str, artifact: Artifact, pack, chunk_ids: list[int], threads: int | None = None,
                  shards: int | None = None) -> dict:
    """Run a pack's chunks across the target's devices; the same outcome as ``run_chunks``."""
    ray = connect(address)
    target = artifact.manifest.target
    shards = shards or devices(ray, target, address)
    devices(ray, target, address)  # also when --shards is given: a target with no node would wait forever
    art_ref = ray.put(artifact_blobs(artifact))
    pack_json = (pack.path / "pack.json").read_bytes()
    task = ray.remote(_golden_task)
    futures, groups, errors, status = [], [], [], {}
    for group in _split(list(chunk_ids), shards):
        files = {"pack.json": pack_json}
        for cid in group:
            path = pack.path / pack.chunks[cid]["file"]
            if path.is_file():  # a missing chunk is reported by the node (it verifies every chunk)
                files[path.name] = path.read_bytes()
        futures.append(task.options(resources={target: 1}, scheduling_strategy="SPREAD")
                       .remote(art_ref, files, group, threads))
        groups.append(group)
    done, failed = _gather(ray, futures, groups)
    records = [r for d in done for r in d["records"]]
    errors = [e for d in done for e in d["errors"]] + failed
    for d in done:
        status.update(d["chunks"])
    stopped = next((d["stopped"] for d in done if d["stopped"]), None)
    runtime = "; ".join(sorted({d["runtime"] for d in done if d.get("runtime")})) or None
    return {"records": records, "errors": errors, "chunks": status, "stopped": stopped, "runtime": runtime,
            "run": {"ray": address, "shards": [d["where"] for d in done]}}


# --- eval ------------------------------------------------------------------------------------------


def _eval_task(artifact_files: dict, videos: dict, items: list[tuple], threads: int | None) -> dict:
    """One shard on a node: decode + run the artifact, return its logits per video (no torch needed:
    the FP32 reference runs on the driver, where torch is)."""
    import ray

    from ..extras import require
    from .errors import NonFiniteOutput
    from .eval import VideoItem, eval_items

    started = time.perf_counter()
    stopped = None
    require("av", f"eval on node {socket.gethostname()} (decoding the videos)")
    info: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgevid-eval-") as tmp:
        art = Artifact(_write_tree(Path(tmp) / "artifact", artifact_files))
        data = _write_tree(Path(tmp) / "data", videos)
        todo = [VideoItem(index, key, data.joinpath(*[p if p not in ("..", ".") else "_" for p in PurePosixPath(key.lstrip("/")).parts]), label)
                for index, key, label in items]
        try:
            records, errors = eval_items(art, todo, threads, with_reference=False, keep_logits=True, info=info)
        except NonFiniteOutput as exc:
            records, errors, stopped = exc.records, [*exc.errors, str(exc)], str(exc)
    where = {**_where(ray), "videos": len(items), "seconds": round(time.perf_counter() - started, 2),
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
    from .eval import reference_logits
    from .metrics import video_record

    ray = connect(address)
    target = artifact.manifest.target
    count = devices(ray, target, address)
    art_ref = ray.put(artifact_blobs(artifact))
    task = ray.remote(_eval_task)
    futures, groups = [], _split(list(items), shards or count)
    for group in groups:
        videos = {item.key: Path(item.path).read_bytes() for item in group}
        futures.append(task.options(resources={target: 1}, scheduling_strategy="SPREAD").remote(
            art_ref, videos, [(item.index, item.key, item.label) for item in group], threads))
    labels = shard_labels(groups)
    refs, ref_errors = reference_logits(artifact, items, threads) if with_reference else ({}, [])
    done, failed = _gather(ray, futures, labels)
    records = []
    for d in done:
        for r in d["records"]:
            logits = r.pop("logits")
            if with_reference:
                if r["index"] not in refs:
                    continue  # its reference could not be computed: reported in ref_errors
                r = video_record(r["index"], r["video"], r["label"], logits, refs[r["index"]])
            records.append(r)
    errors = [e for d in done for e in d["errors"]] + failed + ref_errors
    runtime = "; ".join(sorted({d["runtime"] for d in done if d.get("runtime")})) or None
    run = {"ray": address, "shards": [d["where"] for d in done], "runtime": runtime,
           "reference": "on the driver" if with_reference else None}
    stopped = next((d["stopped"] for d in done if d["stopped"]), None)
    if stopped:
        run["stopped"] = stopped
    return records, errors, run
