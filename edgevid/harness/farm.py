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


def write_tree(root: Path, blobs: dict[str, bytes]) -> Path:
    for name, data in blobs.items():
        rel = PurePosixPath(name.lstrip("/"))
        parts = [p if p not in ("..", ".") else "_" for p in rel.parts]
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def where(ray) -> dict:
    return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def shard_labels(groups: list[list]) -> list[str]:
    """'2/3 (67 videos)': shards are strided (every n-th video), so no index range describes them."""
    return [f"{i + 1}/{len(groups)} ({len(g)} video{'s' if len(g) != 1 else ''})" for i, g in enumerate(groups)]


def split(items: list, shards: int) -> list[list]:
    groups = [items[i::shards] for i in range(shards)]
    return [g for g in groups if g]


def gather(ray, futures: list, shards: list) -> tuple[list[dict], list[str]]:
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
