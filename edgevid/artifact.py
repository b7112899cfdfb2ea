"""The artifact folder: model files + a sealed manifest that describes and fingerprints them.

Artifacts are assembled in a staging folder and swapped into place (``outputs.commit_folder``),
so a failed or interrupted build never leaves a half-written artifact behind and never replaces
anything edgevid did not make. The manifest is sealed (sha256 over its canonical JSON, checked on
open); every file a runner opens must be listed in it, confined to the folder and match its
sha256; an optional Ed25519 signature (``signing``) covers the seal. Torch-free: runners use it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .errors import ArtifactError, first_line
from .outputs import commit_folder, write_atomic
from .spec import ModelSpec

MANIFEST = "manifest.json"
REPORT = "report.json"
from .signing import SIGNATURE  # noqa: E402  (signing imports nothing of ours but errors)
# Files that change after the build (or sign it) and are therefore not hashed; nothing runs them.
MUTABLE_FILES = {MANIFEST, REPORT, "report.md", "build.log", SIGNATURE, ".report.lock"}
PROGRESS_DIR = ".progress"  # eval's resumable progress (harness/eval.py): appended to, never run
BACKENDS = ("torch_eager", "onnxruntime", "openvino", "executorch", "tensorrt")


def safe_relative(name: str) -> str:
    """``name`` if it is a normalised relative path inside a folder, else ``ValueError``."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ValueError(f"file entry {name!r} is not a relative path")
    if name.startswith("/") or posixpath.normpath(name) != name or name.split("/")[0] == "..":
        raise ValueError(f"file entry {name!r} is not a normalised path inside the artifact")
    return name


class WeightsInfo(BaseModel):
    source: str = Field(description="'random', 'reference' (the shipped weights) or the checkpoint path as given")
    path: str | None = Field(None, description="absolute path of the checkpoint the build read")
    sha256: str | None = None
    random: bool = False

    @property
    def flag(self) -> str:
        """The ``--weights`` value that selects these weights again."""
        return "random" if self.random else "reference" if self.source == "reference" else (self.path or self.source)


class BuildRecord(BaseModel):
    """The build request as given, so that a printed rebuild command rebuilds the same artifact."""

    weights: str
    calib: str | None = None
    calib_size: int | None = None
    num_classes: int | None = None
    labels: str | None = None
    protocol: str | None = None
    options: dict[str, Any] = {}
    out: str

    def command(self, model: str, target: str, precision: str) -> str:
        import shlex

        import yaml

        args = ["edgevid", "build", "--model", model, "--target", target, "--precision", precision, "--weights", self.weights]
        if self.calib:
            args += ["--calib", self.calib]
        if self.calib_size:
            args += ["--calib-size", str(self.calib_size)]
        if self.labels:
            args += ["--labels", self.labels]
        elif self.num_classes:
            args += ["--num-classes", str(self.num_classes)]
        if self.protocol and self.protocol != "default":
            args += ["--protocol", self.protocol]
        options = dict(self.options)
        if options.get("keep_float"):
            args += ["--keep-float", ",".join(options.pop("keep_float"))]
        options.pop("keep_float", None)
        for key, value in sorted(options.items()):
            if key == "from_onnx":
                continue
            flow = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            args += ["--option", f"{key}={flow.removesuffix(chr(10) + '...').strip()}"]
        args += ["--out", self.out]
        return shlex.join(args)


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
    precision: Literal["fp32", "fp16", "int8"]
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
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="wall seconds per build stage"
                                            " (calibration data, export, rewrite, calibration, lowering, compile ...)")
    stage_cpu_seconds: dict[str, float] = Field(default_factory=dict, description="CPU seconds per build stage"
                                                " (this process's threads and finished children): the cost on a"
                                                " shared machine, where wall time depends on the load")
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    build: BuildRecord | None = None
    seal: str | None = Field(None, description="sha256 of this manifest's canonical JSON without the seal")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"backend {value!r} is not one of {', '.join(BACKENDS)}")
        return value

    @field_validator("files")
    @classmethod
    def _confined(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            safe_relative(name)
            if name in MUTABLE_FILES:
                raise ValueError(f"file entry {name!r} cannot be hashed (it changes after the build)")
        return files

    @model_validator(mode="after")
    def _agrees_with_spec(self) -> "Manifest":
        if len(self.input_shape) != 5 or list(self.input_shape[1:]) != list(self.spec.input_shape(1)[1:]):
            raise ValueError(f"input_shape {self.input_shape} disagrees with the spec's clip"
                             f" {list(self.spec.input_shape(1)[1:])} (frames {self.spec.clip.frames}, crop {self.spec.clip.crop})")
        if len(self.labels) != self.spec.num_classes:
            raise ValueError(f"{len(self.labels)} labels for the spec's num_classes {self.spec.num_classes}")
        if self.spec.name != self.model:
            raise ValueError(f"model {self.model!r} disagrees with the spec's name {self.spec.name!r}")
        return self


def read_json_object(path: Path, what: str, fix: str) -> dict:
    """The JSON object in ``path``; ``ArtifactError`` "PATH WHAT (why); FIX" for anything else."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} {what} ({first_line(exc)}); {fix}") from None
    return data


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal_of(data: dict) -> str:
    """The seal of a manifest's JSON object: sha256 of its canonical form without ``seal``."""
    return hashlib.sha256(canonical_json({k: v for k, v in data.items() if k != "seal"})).hexdigest()


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Seal ``manifest`` and write it to ``folder/manifest.json`` (atomically)."""
    data = json.loads(manifest.model_dump_json())
    data["seal"] = seal_of(data)
    write_atomic(Path(folder) / MANIFEST, json.dumps(data, indent=2, ensure_ascii=False))
    return Manifest.model_validate(data)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Artifact:
    """An artifact folder on disk, its manifest checked against its seal on open."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise ArtifactError(
                f"{self.path} is not an edgevid artifact (no {MANIFEST}); build one with `edgevid build`"
            )
        raw = read_json_object(manifest_path, "is unreadable", "rebuild the artifact")
        if raw.get("seal") != seal_of(raw):
            what = "has no seal (made by an older edgevid)" if not raw.get("seal") else "was edited after the build (its seal does not match)"
            raise ArtifactError(f"{manifest_path} {what}; rebuild the artifact with `edgevid build`")
        try:
            self.manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()[:2])
            raise ArtifactError(f"{manifest_path} is invalid ({detail[:300]}); rebuild the artifact") from None

    def file(self, name: str) -> Path:
        """The path of a file the manifest lists (``ArtifactError`` for any other name)."""
        if name not in self.manifest.files:
            raise ArtifactError(f"{self.path / name} is not listed in {self.path / MANIFEST}; rebuild the artifact"
                                f" with `{self.rebuild_command()}`")
        return self.path / name

    def has(self, name: str) -> bool:
        return name in self.manifest.files

    def verify(self) -> None:
        """Raise ``ArtifactError`` unless every listed file is present, confined and matches its
        sha256, no unlisted file sits in the folder, and (when required) the signature is valid."""
        root = self.path.resolve()
        for name, expected in self.manifest.files.items():
            path = self.path / name
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                raise ArtifactError(f"{path} points outside the artifact; rebuild it with `{self.rebuild_command()}`")
            if not path.is_file():
                raise ArtifactError(f"{path} is missing from the artifact; rebuild it with `{self.rebuild_command()}`")
            if sha256_file(path) != expected:
                raise ArtifactError(
                    f"{path} does not match its sha256 in {MANIFEST} (modified or corrupt); rebuild it with"
                    f" `{self.rebuild_command()}`"
                )
        for path in self.path.rglob("*"):
            rel = path.relative_to(self.path).as_posix()
            if not path.is_dir() and rel not in self.manifest.files and not is_mutable(rel):
                raise ArtifactError(f"{path} is not listed in {MANIFEST} (added after the build); remove it or rebuild"
                                    f" the artifact with `{self.rebuild_command()}`")
        from .signing import check_required_signature

        check_required_signature(self.path, self.manifest.seal or "", "artifact")

    def rebuild_command(self, **changes: Any) -> str:
        """A command that, run as printed, rebuilds this artifact in place (``changes``: BuildRecord
        fields to alter, e.g. ``protocol="slowfast"``)."""
        m = self.manifest
        record = m.build or BuildRecord(weights=m.weights.flag, out=str(self.path.resolve().parent))
        return record.model_copy(update=changes).command(m.model, m.target, m.precision)

    def read_report(self) -> dict[str, Any]:
        path = self.path / REPORT
        if not path.is_file():
            return {}
        return read_json_object(path, "is corrupt", "delete it (eval and bench write a new one)")

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


def is_mutable(rel: str) -> bool:
    """Files edgevid writes into an artifact after the build: reports, logs, the signature, eval's
    progress, and the temp files of their atomic writes (``.report.json.XXXX``)."""
    if rel in MUTABLE_FILES or rel.startswith(PROGRESS_DIR + "/"):
        return True
    return "/" not in rel and any(rel.startswith(f".{m}.") for m in MUTABLE_FILES)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(Path(path), text)


def artifact_name(model: str, target: str, precision: str, protocol: str = "default") -> str:
    """``<model>-<target>-<precision>``, then ``-<protocol>`` for a non-default test protocol."""
    return f"{model}-{target}-{precision}" + ("" if protocol == "default" else f"-{protocol}")


@contextmanager
def staging_dir(final: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder for the artifact ``final``; on success it replaces ``final``
    atomically, only if ``final`` is absent or an edgevid artifact (rebuilding the same name)."""
    with commit_folder(final, "artifact", overwrite=overwrite) as tmp:
        yield tmp


def finalize_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``folder`` (except the mutable ones), seal and write manifest.json."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not is_mutable(rel):
            files[rel] = sha256_file(path)
    return write_manifest(folder, manifest.model_copy(update={"files": files}))
