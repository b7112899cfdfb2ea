"""Golden packs on a phone, with ExecuTorch's own tooling (no app of ours).

``export_bundle`` (host; torch + executorch) turns an ExecuTorch artifact and a golden pack into a
folder to copy to the phone::

    <bundle>/model.bpte        ExecuTorch BundledProgram: the artifact's .pte + one test case per
                               model batch (inputs, and the FP32 reference logits as expected outputs)
    <bundle>/model.pte         the artifact's .pte, for executor_runner's raw-input mode
    <bundle>/inputs/case-NNNNN.bin   each test case's input as raw float32, as executor_runner
                               ``--inputs`` reads it
    <bundle>/run_on_device.sh  runs every case with executor_runner, writing outputs/case-NNNNN-0.bin
                               (``--output_file``'s naming) and copying bundle.json next to them
    <bundle>/bundle.json       the case layout, the .pte's sha256 and the pack digest

The phone runs the cases (``run_on_device.sh`` over adb on Android; see the README for iPhone) and
``score_outputs`` (any host, numpy only) reads the outputs folder back and scores it exactly as
``golden run`` scores a run on this machine: same records, metrics, gates and report.
``run_bundle_here`` runs the .bpte with ExecuTorch's Python runtime instead of a phone (what the
tests do; also a check of a bundle before it is pushed).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..artifact import Artifact
from ..outputs import commit_folder
from ..errors import BackendUnavailable, EdgevidError, first_line
from .errors import PackError
from .golden import Pack, check_fit, load_pack, run_pack
from .metrics import video_record

log = logging.getLogger("edgevid")

BUNDLE_FILE = "model.bpte"
PTE_FILE = "model.pte"
INFO_FILE = "bundle.json"
RUN_SCRIPT = "run_on_device.sh"
RAN_ON_FILE = "ran_on.txt"
INPUTS, OUTPUTS = "inputs", "outputs"
FORMAT = 1
#: where `golden run --adb` puts the bundle on the phone
REMOTE_ROOT = "/data/local/tmp/edgevid"

RUN_SCRIPT_TEXT = """#!/bin/sh
# Runs every golden case of this bundle with ExecuTorch's executor_runner (examples/portable/executor_runner,
# built for this device with the XNNPACK backend). Usage: sh run_on_device.sh [RUNNER] [THREADS]
# RUNNER defaults to ./executor_runner next to this script. Outputs: outputs/case-NNNNN-0.bin.
set -e
cd "$(dirname "$0")"
RUNNER="${1:-./executor_runner}"
THREADS="${2:--1}"
rm -rf outputs
mkdir -p outputs
cp bundle.json outputs/
for f in inputs/case-*.bin; do
  name=$(basename "$f" .bin)
  "$RUNNER" --model_path model.pte --inputs "$f" --output_file "outputs/$name" --print_output none \\
    --cpu_threads "$THREADS" > outputs/runner.log 2>&1 || { tail -n 5 outputs/runner.log; exit 1; }
done
echo "$(getprop ro.product.manufacturer 2>/dev/null) $(getprop ro.product.model 2>/dev/null) $(uname -m)," \\
  "executor_runner $RUNNER" > outputs/ran_on.txt
echo "edgevid bundle: $(ls outputs | grep -c '[.]bin$') outputs in $(pwd)/outputs"
"""


def case_layout(pack: Pack, batch: int) -> list[dict]:
    """One case per model batch of one video's views, in the order ``golden run`` runs them
    (chunk by chunk, video by video, the last batch of a video zero-padded)."""
    views = int(pack.info["views_per_video"])
    cases = []
    for cid in range(len(pack.chunks)):
        for video in sorted((v for v in pack.videos if v["chunk"] == cid), key=lambda v: v["index"]):
            for start in range(0, views, batch):
                cases.append({"case": len(cases), "chunk": cid, "video": int(video["index"]), "first_view": start,
                              "views": min(batch, views - start)})
    return cases


def _executorch_artifact(artifact_path) -> Artifact:
    artifact = Artifact(artifact_path)
    artifact.verify()
    if artifact.manifest.backend != "executorch":
        raise EdgevidError(f"{artifact.path} is a {artifact.manifest.backend} artifact; phone bundles are made from"
                           " ExecuTorch artifacts (--target android / ios); run other artifacts with `edgevid golden"
                           " run` on their device")
    return artifact


def export_bundle(artifact_path, pack_path, out, pte: str = PTE_FILE, raw_inputs: bool = True) -> Path:
    """`edgevid golden export ART PACK --out BUNDLE`: the folder to copy to the phone (atomically)."""
    from ..extras import require

    artifact = _executorch_artifact(artifact_path)
    pack = load_pack(pack_path)
    check_fit(pack, artifact)
    require(["torch", "executorch"], "edgevid golden export (ExecuTorch's BundledProgram)")
    import torch
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    m = artifact.manifest
    source = artifact.file(pte)
    if pte not in m.files or not source.is_file():
        raise EdgevidError(f"{artifact.path} has no {pte} (its files: {', '.join(sorted(m.files))})")
    batch = int(m.input_shape[0])
    classes = len(m.labels)
    cases = case_layout(pack, batch)
    out = Path(out)
    with commit_folder(out, "bundle", overwrite=True) as tmp:  # replaces only an earlier bundle
        (tmp / INPUTS).mkdir()
        tests = []
        loaded: dict[int, dict] = {}
        for case in cases:
            if case["chunk"] not in loaded:
                loaded = {case["chunk"]: pack.load_chunk(case["chunk"])}
            arrays = loaded[case["chunk"]]
            rows = np.flatnonzero(arrays["video"] == case["video"])[case["first_view"]:case["first_view"] + case["views"]]
            x = np.zeros((batch, *arrays["inputs"].shape[1:]), dtype=np.float32)
            x[: len(rows)] = arrays["inputs"][rows]
            expected = np.zeros((batch, classes), dtype=np.float32)
            expected[: len(rows)] = arrays["ref_logits"][rows]
            tests.append(MethodTestCase(inputs=[torch.from_numpy(x)], expected_outputs=[torch.from_numpy(expected)]))
            if raw_inputs:
                (tmp / INPUTS / f"case-{case['case']:05d}.bin").write_bytes(x.tobytes())
        bundled = BundledProgram(None, [MethodTestSuite(method_name="forward", test_cases=tests)],
                                 pte_file_path=str(source))
        (tmp / BUNDLE_FILE).write_bytes(serialize_from_bundled_program_to_flatbuffer(bundled))
        shutil.copy2(source, tmp / PTE_FILE)
        info = {
            "format": FORMAT, "artifact": artifact.path.name, "model": m.model, "target": m.target,
            "precision": m.precision, "pte": pte, "pte_sha256": m.files[pte], "pack_digest": pack.info["digest"],
            "batch": batch, "input_shape": list(m.input_shape), "classes": classes, "method": "forward",
            "outputs": "outputs/case-NNNNN-0.bin: float32 [batch, classes], as executor_runner --output_file writes",
            "expected_outputs": "the pack's FP32 reference logits (zeros for padding rows)",
            "cases": cases, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        if raw_inputs:
            (tmp / RUN_SCRIPT).write_text(RUN_SCRIPT_TEXT)
    return out


def _bundle_info(folder: Path) -> dict:
    file = Path(folder) / INFO_FILE
    if not file.is_file():
        raise PackError(f"{folder} is not an edgevid phone bundle (no {INFO_FILE}); make one with `edgevid golden export`")
    return json.loads(file.read_text())


def run_bundle_here(bundle, outputs) -> Path:
    """Run every case of ``bundle/model.bpte`` with ExecuTorch's Python runtime on this host (a
    stand-in for the phone) and write ``outputs`` exactly as ``run_on_device.sh`` does."""
    from ..extras import require

    require(["torch", "executorch"], "running a bundle with ExecuTorch's Python runtime")
    from importlib.metadata import version

    from executorch.extension.pybindings.portable_lib import _load_bundled_program_from_buffer

    bundle, outputs = Path(bundle), Path(outputs)
    info = _bundle_info(bundle)
    # ExecuTorch 1.4's Python BundledModule runs a test case only through
    # verify_result_with_bundled_expected_output (load the bundled input, execute, compare): with an
    # infinite tolerance it returns the outputs whatever they are (the gates judge them, not this check).
    program = _load_bundled_program_from_buffer((bundle / BUNDLE_FILE).read_bytes())
    with commit_folder(outputs, "bundle outputs", overwrite=True) as tmp:  # replaces only earlier outputs
        shutil.copy2(bundle / INFO_FILE, tmp / INFO_FILE)
        for case in info["cases"]:
            try:
                (result,) = program.verify_result_with_bundled_expected_output(info["method"], case["case"],
                                                                                rtol=0.0, atol=float("inf"))
                values = result.numpy().astype(np.float32)
            except RuntimeError as exc:  # NaN outputs fail even an infinite tolerance
                if "verification failed" not in str(exc).lower():
                    raise EdgevidError(f"ExecuTorch could not run case {case['case']} of {bundle / BUNDLE_FILE}"
                                       f" ({first_line(exc, 200)})") from None
                values = np.full((info["batch"], info["classes"]), np.nan, dtype=np.float32)
            (tmp / f"case-{case['case']:05d}-0.bin").write_bytes(values.tobytes())
        (tmp / RAN_ON_FILE).write_text(f"this host, ExecuTorch {version('executorch')} Python runtime (stand-in for"
                                       " the phone)\n")
    return outputs


def _outcome_from(outputs: Path):
    """A ``run_chunks``-like outcome read from a phone's outputs folder (for ``run_pack(outcome_of=)``)."""

    def outcome(artifact: Artifact, pack: Pack, chunk_ids: list[int]) -> dict:
        m = artifact.manifest
        batch, classes = int(m.input_shape[0]), len(m.labels)
        if (outputs / INFO_FILE).is_file():
            info = json.loads((outputs / INFO_FILE).read_text())
            if info.get("pack_digest") != pack.info["digest"]:
                raise PackError(f"--outputs {outputs} came from a bundle of another golden pack; score it with that pack")
            if info.get("pte_sha256") != m.files.get(info.get("pte", PTE_FILE)):
                raise PackError(f"--outputs {outputs} came from another .pte than {artifact.path}'s; score it with"
                                f" the artifact {info.get('artifact')}")
        ran_on = (outputs / RAN_ON_FILE).read_text().strip() if (outputs / RAN_ON_FILE).is_file() else "a phone"
        by_video: dict[int, list[dict]] = {}
        for case in case_layout(pack, batch):
            by_video.setdefault(case["video"], []).append(case)
        records, errors, status, stopped = [], [], {}, None
        for cid in chunk_ids:
            try:
                arrays = pack.load_chunk(cid)
            except PackError as exc:
                errors.append(str(exc))
                status[str(cid)] = "skipped: " + str(exc).split(" (")[0].split(f"{pack.path}/")[-1]
                continue
            status[str(cid)] = "ok"
            for video in sorted((v for v in pack.videos if v["chunk"] == cid), key=lambda v: v["index"]):
                parts, missing = [], None
                for case in by_video[video["index"]]:
                    file = outputs / f"case-{case['case']:05d}-0.bin"
                    if not file.is_file() or file.stat().st_size != batch * classes * 4:
                        missing = f"{file} is {'missing' if not file.is_file() else 'not float32 [%d, %d]' % (batch, classes)}"
                        break
                    parts.append(np.fromfile(file, dtype=np.float32).reshape(batch, classes)[: case["views"]])
                if missing:
                    errors.append(f"{video['video']}: {missing}; rerun the bundle on the device")
                    status[str(cid)] = "incomplete"
                    continue
                logits = np.concatenate(parts)
                if not np.isfinite(logits).all():
                    stopped = (f"the phone produced NaN/Inf logits on {video['video']}; rebuild the artifact (e.g. keep"
                               " sensitive layers in float with --max-drop)")
                    errors.append(stopped)
                    status[str(cid)] = "stopped: NaN/Inf"
                    break
                rows = arrays["video"] == video["index"]
                records.append(video_record(video["index"], video["video"], video["label"], logits,
                                            arrays["ref_logits"][rows]))
            if stopped:
                break
        return {"records": records, "errors": errors, "chunks": status, "stopped": stopped,
                "runtime": f"executorch .pte on {ran_on} (outputs from {outputs})",
                "run": {"outputs": str(outputs), "ran_on": ran_on}}

    return outcome


def score_outputs(artifact_path, pack_path, outputs, gates=None, json_path=None, check: bool = True) -> dict:
    """`edgevid golden score ART PACK --outputs DIR`: score outputs a phone computed (numpy only).

    The same records, metrics, gates and report section (``golden``) as ``golden run``.
    """
    outputs = Path(outputs)
    if not outputs.is_dir():
        raise EdgevidError(f"--outputs {outputs}: no such folder; pull the bundle's outputs/ folder from the phone")
    _executorch_artifact(artifact_path)
    return run_pack(artifact_path, pack_path, gates=gates, json_path=json_path, check=check,
                    outcome_of=_outcome_from(outputs))


def run_over_adb(artifact_path, pack_path, serial: str | None = None, runner: str | None = None,
                 threads: int | None = None, gates=None, json_path=None, check: bool = True) -> dict:
    """`edgevid golden run ART PACK --adb [SERIAL]`: export, push, run, pull, score.

    Not tested here: this machine has no phone and no adb. The steps are plain adb commands: push
    the bundle to /data/local/tmp/edgevid/ART, push ``runner`` (a host path to ExecuTorch's
    executor_runner built for the phone; default: ``executor_runner`` already in that folder),
    ``adb shell sh run_on_device.sh``, pull ``outputs/``, then ``score_outputs``.
    """
    adb = shutil.which("adb")
    if adb is None:
        raise BackendUnavailable("--adb needs Android's adb on PATH (Android SDK platform-tools); or copy the bundle"
                                 " from `edgevid golden export` by hand and score with `edgevid golden score`")
    base = [adb, *(["-s", serial] if serial else [])]
    artifact = _executorch_artifact(artifact_path)
    remote = f"{REMOTE_ROOT}/{artifact.path.name}"

    def adb_run(*args: str, what: str) -> str:
        proc = subprocess.run([*base, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()
            raise EdgevidError(f"--adb: {what} failed ({last[-1][:200] if last else f'exit {proc.returncode}'})")
        return proc.stdout

    with tempfile.TemporaryDirectory(prefix="edgevid-adb-") as tmp:
        bundle = export_bundle(artifact.path, pack_path, Path(tmp) / "bundle")
        adb_run("shell", f"rm -rf {remote} && mkdir -p {remote}", what="preparing the phone folder")
        adb_run("push", f"{bundle}/.", remote, what="pushing the bundle")
        remote_runner = f"{remote}/executor_runner"
        if runner and Path(runner).is_file():
            adb_run("push", str(runner), remote_runner, what=f"pushing {runner}")
            adb_run("shell", f"chmod +x {remote_runner}", what="making the runner executable")
        elif runner:
            remote_runner = runner  # a path on the phone
        said = adb_run("shell", f"sh {remote}/{RUN_SCRIPT} {remote_runner} {threads or -1}",
                       what="running the bundle on the phone")
        log.info("phone: %s", said.strip().splitlines()[-1] if said.strip() else "")
        pulled = Path(tmp) / "pulled"
        pulled.mkdir()
        adb_run("pull", f"{remote}/{OUTPUTS}", str(pulled), what="pulling the outputs")
        return score_outputs(artifact.path, pack_path, pulled / OUTPUTS, gates=gates, json_path=json_path, check=check)
