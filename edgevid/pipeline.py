"""The steps every path shares, written once.

* ``prepare_model``: canonical name, spec, weights (absolute path + sha256), seeded random init,
  the model in eval mode. Used by build, the ``--max-drop`` / sensitivity workbench, golden make.
* ``reference_model``: the FP32 model an artifact was built from, reloaded from the manifest's
  weights after checking their sha256 (eval's reference, the Ray farm).
* ``assemble_manifest``: the one place a Manifest is put together from a backend's BuildResult.
* ``record_report``: one section of an artifact's report.json under the report lock, then report.md.

Artifact commits (staging, lock, atomic swap) live in ``outputs.commit_folder``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import Artifact, BuildRecord, CalibrationInfo, Manifest, WeightsInfo, sha256_file
from .errors import CheckpointError
from .spec import ModelSpec, with_protocol

if TYPE_CHECKING:
    from torch import nn

    from .backends.base import BuildResult
    from .targets import Target


@dataclass
class PreparedModel:
    name: str
    spec: ModelSpec
    net: "nn.Module"
    weights: WeightsInfo
    labels: list[str]


def prepare_model(model: str, weights: str | None, num_classes: int | None = None, labels: list[str] | None = None,
                  label_set: str | None = None, protocol: str | None = None) -> PreparedModel:
    """The model to build or to take FP32 reference logits from, and where its weights came from.

    ``labels`` (a custom label set named ``label_set``) sets the head's size and the class names;
    ``protocol`` picks the test protocol where the family's official codebases differ
    (``spec.with_protocol``: X3D ``slowfast`` averages softmax over the head's positions)."""
    import torch

    from .labels import labels_for
    from .models import canonical_name, create_model, get_spec
    from .models.weights import resolve_weights

    name = canonical_name(model)
    spec = with_protocol(get_spec(name), protocol)
    if labels is not None:
        spec = spec.model_copy(update={"label_set": label_set or "custom"})
        if len(labels) != spec.num_classes:
            num_classes = len(labels)
    if num_classes and num_classes != spec.num_classes:
        spec = spec.model_copy(update={"num_classes": num_classes})
    choice = resolve_weights(name, weights)
    if choice.random:
        torch.manual_seed(0)  # every path (build, eval's reference, golden make) re-creates the same random init
    net = create_model(name, num_classes=num_classes, weights=None if choice.random else str(choice.path),
                       **head_options(spec))
    info = WeightsInfo(source=choice.source, random=choice.random,
                       path=None if choice.random else str(Path(choice.path).resolve()),
                       sha256=None if choice.random else sha256_file(choice.path))
    return PreparedModel(name, spec, net, info, list(labels) if labels is not None else labels_for(spec.label_set, spec.num_classes))


def weights_file(weights: WeightsInfo, model: str, override: str | Path | None = None) -> Path | None:
    """The checkpoint recorded in a manifest or pack, checked against its sha256 (None: random init)."""
    from .models.weights import SHIPPED

    if weights.random:
        return None
    if override is not None:
        path = Path(override)
    elif weights.path:
        path = Path(weights.path)
    elif weights.source == "reference":
        path = SHIPPED / f"{model}.pt"
    else:
        path = Path(weights.source)
    if not path.is_file():
        raise CheckpointError(f"the FP32 reference needs the checkpoint the artifact was built from, {path}, which is not"
                              " on this machine; copy it there, or run with --no-reference")
    if weights.sha256 and sha256_file(path) != weights.sha256:
        raise CheckpointError(f"checkpoint {path} is not the one the artifact was built from (its sha256 differs);"
                              " restore that checkpoint or rebuild the artifact from this one")
    return path


def reference_model(manifest: Manifest, weights_path: str | Path | None = None) -> "nn.Module":
    """The FP32 model of ``manifest`` with its verified weights (seeded init for random weights)."""
    import torch

    from .models import create_model

    path = weights_file(manifest.weights, manifest.model, weights_path)
    if path is None:
        torch.manual_seed(0)
    return create_model(manifest.model, num_classes=manifest.spec.num_classes, weights=path and str(path),
                        **head_options(manifest.spec))


def head_options(spec: ModelSpec) -> dict[str, Any]:
    """The builder arguments ``spec``'s test protocol asks of the network (X3D's position average)."""
    head = spec.protocol.head_average if spec.protocol is not None else "logits"
    return {} if head == "logits" else {"position_average": head}


def assemble_manifest(
    prepared: PreparedModel,
    target: "Target",
    backend: str,
    precision: str,
    result: "BuildResult",
    calibration: CalibrationInfo | None,
    build: BuildRecord | None,
    seconds: float,
    versions: dict[str, str] | None = None,
    notes: list[str] | None = None,
    stage_seconds: dict[str, float] | None = None,
    stage_cpu_seconds: dict[str, float] | None = None,
) -> Manifest:
    """The manifest of one build (files are hashed and the seal added by ``finalize_manifest``)."""
    from . import __version__

    notes = list(notes if notes is not None else result.notes)
    if prepared.weights.random:
        notes.insert(0, "random weights: for speed measurements only, accuracy is meaningless")
    return Manifest(
        model=prepared.name, spec=prepared.spec, labels=prepared.labels, target=target.name, backend=backend,
        device=target.device, precision=precision, weights=prepared.weights, calibration=calibration,
        quantization=result.quantization, input_shape=list(prepared.spec.input_shape(target.input_shape.batch)),
        input_name=result.input_name,
        versions={"edgevid": __version__, "python": platform.python_version(), **result.versions, **(versions or {})},
        fingerprint=result.fingerprint, status=result.status, notes=notes, build_seconds=round(seconds, 2), build=build,
        stage_seconds=dict(stage_seconds or {}),
        stage_cpu_seconds=dict(stage_cpu_seconds or {}),
    )


def finished_manifest(source: Manifest, target: "Target", result: "BuildResult", seconds: float) -> Manifest:
    """The manifest of an artifact finished on the device from ``source`` (``build --from-onnx``):
    the same model, weights, calibration and build record; the device's files, fingerprint and status."""
    from datetime import datetime, timezone

    return source.model_copy(update={
        "target": target.name, "device": target.device, "quantization": result.quantization,
        "versions": {**source.versions, **result.versions}, "fingerprint": result.fingerprint, "status": result.status,
        "notes": list(result.notes), "input_name": result.input_name, "files": {}, "seal": None,
        "build_seconds": round(seconds, 2), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def record_report(artifact: Artifact, section: str, data: Any, key: str | None = None) -> None:
    """Write ``data`` as ``section`` of the artifact's report.json (or as ``section[key]``: eval's
    shards) under the report lock, then refresh report.md."""
    from .harness.report import report_lock, write_artifact_markdown

    with report_lock(artifact.path):
        if key is None:
            artifact.update_report(section, data)
        else:
            current = artifact.read_report().get(section, {})
            artifact.update_report(section, {**(current if isinstance(current, dict) else {}), key: data})
        write_artifact_markdown(artifact)


def given_source(value: str | None) -> str | None:
    """A data source as a rebuild command needs it: paths made absolute, keywords ('synthetic') kept."""
    if value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def stale_reason(path: Path, model: str, target: "Target", weights: str | None, calib: str | None,
                 calib_size: int | None, options: dict[str, Any] | None = None) -> str | None:
    """Why the artifact at ``path`` is not what ``edgevid build`` with these arguments would make now
    (None when it is current): broken files, another edgevid, other weights, calibration or options."""
    from . import __version__
    from .backends.options import validate_options
    from .errors import EdgevidError
    from .models.weights import resolve_weights

    try:
        artifact = Artifact(path)
        artifact.verify()
    except EdgevidError as exc:
        return str(exc)
    m, record = artifact.manifest, artifact.manifest.build
    if record is None:
        return "built by an older edgevid (no build record)"
    if m.versions.get("edgevid") != __version__:
        return f"built by edgevid {m.versions.get('edgevid')}, this is {__version__}"
    choice = resolve_weights(model, weights)
    if choice.random != m.weights.random or (not choice.random and sha256_file(choice.path) != m.weights.sha256):
        return "built from other weights"
    if (given_source(calib), calib_size) != (record.calib, record.calib_size):
        return f"calibrated with {record.calib or 'the default set'} x {record.calib_size or 'default'} clips"
    if validate_options(target.backend, dict(options or {})) != record.options:
        return f"built with other options ({record.options})"
    return None
