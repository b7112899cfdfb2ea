"""`edgevid build`: model + target + precision (+ calibration) -> an artifact folder."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .artifact import Artifact, BuildRecord, CalibrationInfo, Manifest, artifact_name, finalize_manifest, staging_dir, write_manifest
from .backends import BuildRequest, get_backend
from .backends.options import validate_options
from .errors import DataError, EdgevidError
from .outputs import check_output_folder
from .signing import load_private_key, write_signature
from .spec import protocol_name, with_protocol
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
    labels_file: str | Path | None = None,
    progress: StageDisplay | None = None,
    protocol: str | None = None,
) -> Artifact:
    """Build ``model`` for ``target``; the artifact appears at ``out/<model>-<target>-<precision>``.

    An existing artifact of that name is replaced (atomically) when ``overwrite``; anything at that
    path that edgevid did not build is never replaced. ``finish(staging, manifest)`` may amend the
    manifest from the staged artifact (the ``--max-drop`` search records its final score) before it
    is sealed, signed (``sign``: an Ed25519 private key file) and committed. ``labels_file``: the
    class names of a model trained on a custom label set (one a line, or JSON); the head gets that
    many classes and the manifest carries the names. ``protocol``: the test protocol where a family's
    official codebases differ (X3D: ``slowfast``; the folder name gets it as a suffix). ``progress`` sees every stage start, advance
    (calibration n/N) and end; the manifest records each stage's seconds.
    """
    if num_classes is not None and num_classes < 1:
        raise EdgevidError(f"--num-classes {num_classes}: give the number of classes of your data (>= 1)")
    if calib_size is not None and calib_size < 1:
        raise EdgevidError(f"--calib-size {calib_size}: give the number of calibration clips (>= 1)")
    signing_key = load_private_key(sign) if sign else None
    if options and options.get("from_onnx"):  # finish a host-built artifact on this device (torch-free)
        options = dict(options)
        return finish_artifact(options.pop("from_onnx"), model, target, precision, out, options, sign, overwrite)
    from .calibration import calibration_set, validation_clips
    from .models import canonical_name, get_spec
    from .pipeline import assemble_manifest, given_source, prepare_model

    target_obj = get_target(target)
    precision = target_obj.check_precision(precision)
    options = validate_options(target_obj.backend, dict(options or {}))
    backend = get_backend(target_obj.backend)
    backend.check(for_build=True)
    custom_labels = None
    if labels_file is not None:
        from .labels import read_label_file

        custom_labels = read_label_file(labels_file)
        if num_classes and num_classes != len(custom_labels):
            raise DataError(f"--labels {labels_file} names {len(custom_labels)} classes but --num-classes is"
                            f" {num_classes}; drop --num-classes (the labels set it)")
    name = canonical_name(model)
    protocol = protocol_name(with_protocol(get_spec(name), protocol))  # a bad --protocol fails here, before any work
    backend.check_request(target_obj, options, get_spec(name))  # before export and calibration, not after
    final = Path(out) / artifact_name(name, target_obj.name, precision, protocol)
    check_output_folder(final, "artifact", overwrite)  # before any work: never after a long calibration
    prepared = prepare_model(model, weights, num_classes, labels=custom_labels,
                             label_set=f"custom:{Path(labels_file).name}" if labels_file else None, protocol=protocol)
    record = BuildRecord(weights=prepared.weights.flag, calib=given_source(calib), calib_size=calib_size,
                         num_classes=num_classes, labels=given_source(str(labels_file)) if labels_file else None,
                         protocol=None if protocol == "default" else protocol,
                         options=options, out=str(Path(out).resolve()))
    stages = BuildStages(progress)
    shown = track if progress is None else None  # `track`: a bar for the clips where no stage display is given

    def timed(items, description, total):  # the clips load as a stage of their own
        return stages.track(shown(items, description, total) if shown else items, "calibration data", total)

    started = time.perf_counter()
    calib_set = calibration_set(calib, prepared.spec, calib_size, timed, backend.name) if precision == "int8" else None
    validation = validation_clips(prepared.spec, options.get("val_data"), options.get("val_size")) \
        if options.get("max_drop") is not None and backend.handles_max_drop else None
    with staging_dir(final, overwrite) as tmp, build_log(tmp):
        log.info("building %s for %s (%s, backend %s)", prepared.name, target_obj.name, precision, backend.name)
        result = backend.build(BuildRequest(
            model=prepared.net, spec=prepared.spec, target=target_obj, precision=precision, out_dir=tmp,
            calib=calib_set.clips if calib_set else None, options=options, validation=validation, stages=stages,
        ))
        calibration = CalibrationInfo(source=calib_set.source, clips=len(calib_set.clips), digest=calib_set.digest) \
            if calib_set else None
        manifest = assemble_manifest(prepared, target_obj, backend.name, precision, result, calibration, record,
                                     time.perf_counter() - started, stage_seconds=stages.rounded(),
                                     stage_cpu_seconds=stages.rounded(cpu=True))
        log.info("stage seconds: %s; CPU seconds: %s", manifest.stage_seconds, manifest.stage_cpu_seconds)
        manifest = finalize_manifest(tmp, manifest)
        if finish is not None:
            manifest = write_manifest(tmp, finish(tmp, manifest))
        if signing_key is not None:
            write_signature(tmp, signing_key, "artifact", manifest.seal)
    return Artifact(final)


def finish_artifact(source: str | Path, model: str | None, target: str | None, precision: str | None,
                    out: str | Path, options: dict[str, Any] | None = None, sign: str | Path | None = None,
                    overwrite: bool = True) -> Artifact:
    """`edgevid build --from-onnx ARTIFACT`: finish a host-built artifact on this device (TensorRT: its
    Q/DQ ONNX -> an engine) into a new artifact, through the same staging, manifest and commit. Torch-free."""
    from .pipeline import finished_manifest

    signing_key = load_private_key(sign) if sign else None
    src = Artifact(source)
    src.verify()
    backend = get_backend(src.manifest.backend)
    if not backend.finishes_on_device:
        raise EdgevidError(f"--from-onnx {source}: {backend.name} artifacts are complete when built; nothing to finish")
    options = dict(options or {})
    target_obj = backend.check_finish(src, model, target, precision, options)
    final = Path(out) / artifact_name(src.manifest.model, target_obj.name, src.manifest.precision,
                                      protocol_name(src.manifest.spec))
    check_output_folder(final, "artifact", overwrite)
    started = time.perf_counter()
    with staging_dir(final, overwrite) as tmp, build_log(tmp):
        result = backend.finish(src, target_obj, options, tmp, final)
        manifest = finalize_manifest(tmp, finished_manifest(src.manifest, target_obj, result, time.perf_counter() - started))
        if signing_key is not None:
            write_signature(tmp, signing_key, "artifact", manifest.seal)
    return Artifact(final)


@contextmanager
def build_log(folder: Path) -> Iterator[None]:
    """Everything edgevid logs while building goes to ``folder/build.log`` as well."""
    handler = logging.FileHandler(folder / "build.log")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()

