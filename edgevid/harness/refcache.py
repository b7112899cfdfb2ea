"""The FP32 reference's logits, computed once per model and video and reused by every later eval.

Evaluating the n-th artifact of a model on the same videos needs the same reference outputs as the
first one did. They depend only on, and an entry is keyed by:

* the weights: the sha256 the artifact's manifest records (random weights: the seeded init);
* the model and its views: model name, number of classes, the whole ``ModelSpec`` (clip spec, test
  protocol, normalisation, training fps), the view kind;
* the code that makes them: edgevid's version, torch's version, and a sha256 of the sources that
  produce the views and the FP32 forward (``edgevid/models``, ``edgevid/data``, ``edgevid/spec.py``,
  ``edgevid/pipeline.py`` and the module that registered the model), so an edited model or data path
  never reuses stale logits;
* the video: the sha256 of the file's bytes (a file rewritten in place is another video; the same
  bytes under another path or in another dataset are the same video). Paths, sizes and mtimes are
  not used: they miss an edit that keeps them and invalidate a copy that changes nothing.

One entry per (model key, video): ``$EDGEVID_HOME/cache/reference/<model>-<key>/<video sha256>.npz``
(the per-view logits and the full key it was made for), written atomically with
``outputs.write_atomic``. An entry that does not load, does not match its key or holds logits of the
wrong shape is ignored with a one-line warning, recomputed and rewritten. Per-video entries serve
``--limit``, ``--shard``, resumed runs and other datasets holding the same videos alike.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..artifact import Manifest, sha256_file
from ..errors import EdgevidError
from ..paths import edgevid_home

log = logging.getLogger("edgevid")

FORMAT = 1
_SOURCES = ("models", "data", "spec.py", "pipeline.py")  # in the edgevid package: what the views and the forward depend on


def cache_root() -> Path:
    return edgevid_home() / "cache" / "reference"


@lru_cache(maxsize=None)
def _package_sources_digest() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = package / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def code_digest(model: str) -> str:
    """sha256 of the sources the reference's outputs depend on, plus the module that registered the
    model when that is not edgevid's (a model registered elsewhere has imported the registry)."""
    import sys

    digest = hashlib.sha256(_package_sources_digest().encode())
    registry = sys.modules.get("edgevid.models.registry")  # a model registered outside edgevid imported it
    try:
        source = inspect.getsourcefile(registry.get_entry(model).builder) if registry else None
    except (TypeError, EdgevidError):
        source = None
    package = Path(__file__).resolve().parent.parent
    if source and Path(source).is_file() and not Path(source).resolve().is_relative_to(package):
        digest.update(Path(source).read_bytes())  # edgevid's own models are in the package digest
    return digest.hexdigest()


def model_key(manifest: Manifest, kind: str = "test") -> dict:
    """Everything but the video that the reference's logits depend on (see the module docstring)."""
    from importlib import metadata

    from .. import __version__

    weights = manifest.weights
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "format": FORMAT,
        "edgevid": __version__,
        "torch": torch_version,
        "code": code_digest(manifest.model),
        "model": manifest.model,
        "num_classes": manifest.spec.num_classes,
        "weights": "random init (torch.manual_seed(0))" if weights.random else weights.sha256,
        "spec": manifest.spec.model_dump(mode="json"),
        "views": kind,
    }


class ReferenceCache:
    """Look-ups and stores of one model's reference logits; counts what came from where.

    ``enabled=False`` (``--no-reference-cache``): nothing is read or written, every video counts as computed.
    """

    def __init__(self, manifest: Manifest, enabled: bool = True, root: Path | None = None, kind: str = "test"):
        self.enabled = enabled
        key = model_key(manifest, kind)
        if key["weights"] is None:  # a manifest without the weights' hash: nothing safe to key by
            self.enabled = False
        self.key_digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self.folder = (root or cache_root()) / f"{manifest.model}-{self.key_digest[:16]}"
        self._key = key
        self.views = manifest.spec.clip.test_clips * manifest.spec.clip.test_crops if kind == "test" else 1
        self.classes = manifest.spec.num_classes
        self.cached = self.computed = self.rejected = 0
        self.seconds = 0.0  # reading and writing entries
        self._writable = True

    def _entry(self, video_sha: str) -> Path:
        return self.folder / f"{video_sha}.npz"

    def _label(self, video_sha: str) -> str:
        return json.dumps({"model_key": self.key_digest, "video_sha256": video_sha})

    def video_digest(self, path: str | Path) -> str | None:
        """sha256 of the video's bytes (None: cache off or unreadable). Thread-safe: decode workers call it."""
        if not self.enabled:
            return None
        try:
            return sha256_file(Path(path))
        except OSError:
            return None

    def get(self, video_sha: str | None, video: str = "") -> np.ndarray | None:
        """The cached logits ``[views, classes]`` of the video with this content digest, or None."""
        if video_sha is None:
            return None
        started = time.perf_counter()
        try:
            return self._read(video_sha, video)
        finally:
            self.seconds += time.perf_counter() - started

    def _read(self, video_sha: str, video: str) -> np.ndarray | None:
        path = self._entry(video_sha)
        if not path.is_file():
            return None
        why = None
        try:
            with np.load(path, allow_pickle=False) as npz:
                label, logits = str(npz["key"]), np.asarray(npz["logits"])
        except Exception as exc:  # noqa: BLE001 - any unreadable entry (truncated zip, bad header, ...) is recomputed
            why = f"damaged ({type(exc).__name__})"
        else:
            if label != self._label(video_sha):
                why = "made for another model key or video"
            elif logits.dtype != np.float32 or logits.shape != (self.views, self.classes) or not np.isfinite(logits).all():
                why = f"holds logits of shape {logits.shape} {logits.dtype}, expected ({self.views}, {self.classes}) float32"
        if why:
            self.rejected += 1
            log.warning("reference cache entry %s%s is %s: recomputing it", path, f" ({video})" if video else "", why)
            return None
        self.cached += 1
        return logits

    def put(self, video_sha: str | None, logits: np.ndarray) -> None:
        """Store a computed reference (counted as computed whether or not it could be written)."""
        self.computed += 1
        if video_sha is None or not self._writable:
            return
        from ..outputs import write_atomic

        started = time.perf_counter()
        buffer = io.BytesIO()
        np.savez(buffer, logits=np.ascontiguousarray(logits, dtype=np.float32), key=np.array(self._label(video_sha)))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            key_file = self.folder / "key.json"
            if not key_file.is_file():
                write_atomic(key_file, json.dumps(self._key, indent=1, sort_keys=True))
            write_atomic(self._entry(video_sha), buffer.getvalue())
        except OSError as exc:
            self._writable = False
            log.warning("cannot write the reference cache in %s (%s): this run's reference is not cached",
                        self.folder, exc.strerror or exc)
        finally:
            self.seconds += time.perf_counter() - started

    def summary(self, forwards: int) -> dict:
        """The report's account of where the reference came from."""
        if self.cached and self.computed:
            source = f"cache for {self.cached} video(s), computed for {self.computed}"
        elif self.cached:
            source = "cache"
        else:
            source = "computed" + ("" if self.enabled else " (cache off)")
        return {"source": source, "cached_videos": self.cached, "computed_videos": self.computed,
                "rejected_entries": self.rejected, "forwards": forwards,
                "cache": str(self.folder) if self.enabled else None}
