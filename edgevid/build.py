"""`edgevid build`: model + target + precision (+ calibration) -> an artifact folder."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .artifact import Artifact, CalibrationInfo, Manifest, WeightsInfo, artifact_name, finalize_manifest, sha256_file, staging_dir
from .backends import BuildRequest, get_backend
from .errors import DataError
from .labels import labels_for
from .targets import get_target

log = logging.getLogger("edgevid")


def build_artifact(
    model: str,
    target: str,
    precision: str | None = None,
    weights: str | None = None,
    calib: str | None = None,
    calib_size: int | None = None,
    out: str | Path = "artifacts",
    num_classes: int | None = None,
    options: dict[str, Any] | None = None,
    track: Callable[[Iterable, str, int], Iterable] | None = None,
    labels_file: str | Path | None = None,
) -> Artifact:
    """Build ``model`` for ``target``; the artifact appears at ``out/<model>-<target>-<precision>``.

    ``labels_file``: the class names of a model trained on a custom label set (one a line, or JSON);
    the head gets that many classes and the manifest carries the names."""
    if options and options.get("from_onnx"):  # TensorRT: finish a host-built artifact on the device (torch-free)
        from .backends.tensorrt import build_from_onnx

        return build_from_onnx(options["from_onnx"], model, target, precision, out, options.get("dla_core"))
    if options and options.get("dla_core") is not None:  # fail before export/calibration, not after
        from .backends.tensorrt import check_dla_request

        check_dla_request(get_target(target), options["dla_core"])
    from .calibration import calibration_set
    from .models import canonical_name, create_model, get_spec
    from .models.weights import resolve_weights

    target_obj = get_target(target)
    precision = target_obj.check_precision(precision)
    backend = get_backend(target_obj.backend)
    backend.check(for_build=True)
    name = canonical_name(model)
    spec = get_spec(name)
    custom_labels = None
    if labels_file is not None:
        from .labels import read_label_file

        custom_labels = read_label_file(labels_file)
        if num_classes and num_classes != len(custom_labels):
            raise DataError(f"--labels {labels_file} names {len(custom_labels)} classes but --num-classes is"
                            f" {num_classes}; drop --num-classes (the labels set it)")
        if len(custom_labels) != spec.num_classes:
            num_classes = len(custom_labels)
        spec = spec.model_copy(update={"label_set": f"custom:{Path(labels_file).name}"})
    if num_classes and num_classes != spec.num_classes:
        spec = spec.model_copy(update={"num_classes": num_classes})
    choice = resolve_weights(name, weights)
    if choice.random:
        import torch

        torch.manual_seed(0)  # the eval reference re-creates the same random weights
    net = create_model(name, num_classes=num_classes, weights=None if choice.random else str(choice.path))

    calib_set = calibration_set(calib, spec, calib_size, track) if precision == "int8" else None
    final = Path(out) / artifact_name(name, target_obj.name, precision)
    started = time.perf_counter()
    with staging_dir(final) as tmp:
        handler = logging.FileHandler(tmp / "build.log")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        try:
            log.info("building %s for %s (%s, backend %s)", name, target_obj.name, precision, backend.name)
            result = backend.build(BuildRequest(
                model=net, spec=spec, target=target_obj, precision=precision, out_dir=tmp,
                calib=calib_set.clips if calib_set else None, options=options or {},
            ))
            notes = list(result.notes)
            if choice.random:
                notes.insert(0, "random weights: for speed measurements only, accuracy is meaningless")
            manifest = Manifest(
                model=name,
                spec=spec,
                labels=custom_labels or labels_for(spec.label_set, spec.num_classes),
                target=target_obj.name,
                backend=backend.name,
                device=target_obj.device,
                precision=precision,
                weights=WeightsInfo(
                    source=choice.source,
                    sha256=None if choice.random else sha256_file(choice.path),
                    random=choice.random,
                ),
                calibration=CalibrationInfo(source=calib_set.source, clips=len(calib_set.clips), digest=calib_set.digest)
                if calib_set else None,
                quantization=result.quantization,
                input_shape=list(spec.input_shape(target_obj.input_shape.batch)),
                input_name=result.input_name,
                versions={"edgevid": _version(), "python": platform.python_version(), **result.versions},
                fingerprint=result.fingerprint,
                status=result.status,
                notes=notes,
                build_seconds=round(time.perf_counter() - started, 2),
            )
            finalize_manifest(tmp, manifest)
        finally:
            log.removeHandler(handler)
            handler.close()
    return Artifact(final)


def _version() -> str:
    from . import __version__

    return __version__
