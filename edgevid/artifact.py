"""The artifact folder: model files + a manifest that describes and fingerprints them.

Artifacts are assembled in a temporary sibling folder and renamed into place, so a failed or
interrupted build never leaves a half-written artifact behind. Torch-free: runners use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, Field

from .errors import ArtifactError, EdgevidError
from .spec import ModelSpec

MANIFEST = "manifest.json"
REPORT = "report.json"
# Files that change after the build and are therefore not hashed.
UNHASHED = {MANIFEST, REPORT, "report.md", "build.log"}


class WeightsInfo(BaseModel):
    source: str = Field(description="'random', 'reference' or the checkpoint path")
    sha256: str | None = None
    random: bool = False


class CalibrationInfo(BaseModel):
    source: str
    clips: int
    digest: str


class Manifest(BaseModel):
    format_version: int = 1
    model: str
    spec: ModelSpec
    labels: list[str]
    target: str
    backend: str
    device: str
    precision: str
    weights: WeightsInfo
    calibration: CalibrationInfo | None = None
    quantization: dict[str, Any] = {}
    input_shape: list[int]
    input_name: str = "input"
    files: dict[str, str] = {}
    versions: dict[str, str] = {}
    fingerprint: dict[str, Any] = {}
    status: dict[str, str] = {}
    notes: list[str] = []
    build_seconds: float | None = None
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Artifact:
    """An artifact folder on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(
                f"{self.path} is not an edgevid artifact (no {MANIFEST}); build one with `edgevid build`"
            )
        try:
            self.manifest = Manifest.model_validate_json(manifest_path.read_text())
        except Exception as exc:
            raise ArtifactError(f"{manifest_path} is unreadable ({str(exc).splitlines()[0][:200]}); rebuild the artifact") from None

    def file(self, name: str) -> Path:
        return self.path / name

    def verify(self) -> None:
        """Raise ``ArtifactError`` if a listed file is missing or its sha256 differs."""
        for name, expected in self.manifest.files.items():
            path = self.path / name
            if not path.is_file():
                raise ArtifactError(f"{path} is missing from the artifact; rebuild it with `{self.rebuild_command()}`")
            if sha256_file(path) != expected:
                raise ArtifactError(
                    f"{path} does not match its sha256 in {MANIFEST} (modified or corrupt); rebuild it with"
                    f" `{self.rebuild_command()}`"
                )

    def rebuild_command(self) -> str:
        m = self.manifest
        weights = "random" if m.weights.random else m.weights.source
        return f"edgevid build --model {m.model} --target {m.target} --precision {m.precision} --weights {weights}"

    def read_report(self) -> dict[str, Any]:
        path = self.path / REPORT
        return json.loads(path.read_text()) if path.is_file() else {}

    def update_report(self, section: str, data: Any) -> None:
        """Merge ``data`` under ``section`` of report.json (atomic write)."""
        report = self.read_report()
        report[section] = data
        write_text_atomic(self.path / REPORT, json.dumps(report, indent=2, default=str))

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def __repr__(self) -> str:
        return f"Artifact({self.path})"


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def artifact_name(model: str, target: str, precision: str) -> str:
    return f"{model}-{target}-{precision}"


@contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``final``; on success it replaces ``final`` atomically."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    except OSError as exc:
        raise EdgevidError(f"cannot write to output folder {final.parent} ({exc.strerror}); pass a writable --out") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{int(time.time() * 1000)}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def finalize_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``folder`` (except the mutable ones) and write manifest.json."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel not in UNHASHED:
            files[rel] = sha256_file(path)
    manifest = manifest.model_copy(update={"files": files})
    (folder / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest
