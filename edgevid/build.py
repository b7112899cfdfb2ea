"""`edgevid build`: model + target + precision (+ calibration) -> an artifact folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .artifact import Artifact, BuildRecord, CalibrationInfo, Manifest, artifact_name, finalize_manifest, staging_dir, write_manifest
from .backends import BuildRequest, get_backend
from .backends.options import validate_options
from .errors import EdgevidError
from .outputs import check_output_folder
from .signing import load_private_key, write_signature
from .stages import BuildStages, StageDisplay
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
    sign: str | Path | None = None,
    overwrite: bool = True,
    finish: Callable[[Path, Manifest], Manifest] | None = None,
    progress: StageDisplay | None = None,
) -> Artifact:
    """Build ``model`` for ``target``; the artifact appears at ``out/<model>-<target>-<precision>``.

    An existing artifact of that name is replaced (atomically) when ``overwrite``; anything at that
    path that edgevid did not build is never replaced. ``finish(staging, manifest)`` may amend the
    manifest from the staged artifact (the ``--max-drop`` search records its final score) before it
    is sealed, signed (``sign``: an Ed25519 private key file) and committed. ``progress`` sees every
    stage start, advance (calibration n/N) and end; the manifest records each stage's seconds.
    """
    if num_classes is not None and num_classes < 1:
        raise EdgevidError(f"--num-classes {num_classes}: give the number of classes of your data (>= 1)")
    if calib_size is not None and calib_size < 1:
        raise EdgevidError(f"--calib-size {calib_size}: give the number of calibration clips (>= 1)")
    signing_key = load_private_key(sign) if sign else None
    if options and options.get("from_onnx"):  # TensorRT: finish a host-built artifact on the device (torch-free)
        from .backends.tensorrt import build_from_onnx

        return build_from_onnx(options["from_onnx"], model, target, precision, out, options.get("dla_core"))
    if options and options.get("dla_core") is not None:  # fail before export/calibration, not after
        from .backends.tensorrt import check_dla_request

        check_dla_request(get_target(target), options["dla_core"])
    from .calibration import calibration_set
    from .models import canonical_name
    from .pipeline import assemble_manifest, given_source, prepare_model

    target_obj = get_target(target)
    precision = target_obj.check_precision(precision)
    options = validate_options(target_obj.backend, dict(options or {}))
    backend = get_backend(target_obj.backend)
    backend.check(for_build=True)
    final = Path(out) / artifact_name(canonical_name(model), target_obj.name, precision)
    check_output_folder(final, "artifact", overwrite)  # before any work: never after a long calibration
    prepared = prepare_model(model, weights, num_classes)
    record = BuildRecord(weights=prepared.weights.flag, calib=given_source(calib), calib_size=calib_size,
                         num_classes=num_classes, options=options, out=str(Path(out).resolve()))
    stages = BuildStages(progress)
    shown = track if progress is None else None  # `track`: a bar for the clips where no stage display is given

    def timed(items, description, total):  # the clips load as a stage of their own
        return stages.track(shown(items, description, total) if shown else items, "calibration data", total)

    started = time.perf_counter()
    calib_set = calibration_set(calib, prepared.spec, calib_size, timed, backend.name) if precision == "int8" else None
    with staging_dir(final, overwrite) as tmp:
        handler = logging.FileHandler(tmp / "build.log")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        try:
            log.info("building %s for %s (%s, backend %s)", prepared.name, target_obj.name, precision, backend.name)
            result = backend.build(BuildRequest(
                model=prepared.net, spec=prepared.spec, target=target_obj, precision=precision, out_dir=tmp,
                calib=calib_set.clips if calib_set else None, options=options, stages=stages,
            ))
            calibration = CalibrationInfo(source=calib_set.source, clips=len(calib_set.clips), digest=calib_set.digest) \
                if calib_set else None
            manifest = assemble_manifest(prepared, target_obj, backend.name, precision, result, calibration, record,
                                         time.perf_counter() - started, stage_seconds=stages.rounded())
            log.info("stage seconds: %s", manifest.stage_seconds)
            manifest = finalize_manifest(tmp, manifest)
            if finish is not None:
                manifest = write_manifest(tmp, finish(tmp, manifest))
            if signing_key is not None:
                write_signature(tmp, signing_key, "artifact", manifest.seal)
        finally:
            log.removeHandler(handler)
            handler.close()
    return Artifact(final)

