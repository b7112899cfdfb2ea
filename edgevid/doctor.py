"""`edgevid doctor [ARTIFACT]`: what this device has, and whether an artifact will run on it.

Run it on the device first. It probes each runtime without needing any of them (every probe
catches its own failure), so it works on a bare core install: TensorRT, CUDA (driver and
runtime), pycuda / cuda-python, the GPU and its DLA cores, JetPack; ONNX Runtime, OpenVINO and
its devices, ExecuTorch; torch and PyAV (a device needs neither). With an artifact it says what
will run it here, whether a TensorRT engine's fingerprint fits this machine, and for a pending
artifact whether this TensorRT parses its Q/DQ ONNX (or, without TensorRT, the documented rules).
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .errors import EdgevidError
from .extras import importable

Row = tuple[str, str, bool | None]  # what, finding, ok (None: informational)


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def cuda_probe() -> dict[str, Any]:
    """GPU, compute capability, memory, CUDA driver/runtime through pycuda (else cuda-python)."""
    out: dict[str, Any] = {}
    if importable("pycuda"):
        try:
            import pycuda.driver as cuda

            cuda.init()
            out["binding"] = f"pycuda {_version('pycuda') or '?'}"
            out["gpus"] = cuda.Device.count()
            if out["gpus"]:
                dev = cuda.Device(0)
                out["gpu"] = dev.name()
                out["compute_capability"] = "%d.%d" % dev.compute_capability()
                out["memory_gb"] = round(dev.total_memory() / 2**30, 1)
            out["cuda"] = ".".join(str(v) for v in cuda.get_version()[:2])
            driver = cuda.get_driver_version()
            out["cuda_driver"] = f"{driver // 1000}.{driver % 1000 // 10}"
        except Exception as exc:  # no driver, no GPU, a broken install
            out["error"] = _first_line(exc)
    elif importable("cuda"):
        out["binding"] = f"cuda-python {_version('cuda-python') or '?'} (edgevid's runner uses pycuda:" \
                         " pip install 'edgevid[tensorrt]')"
    else:
        out["error"] = "neither pycuda nor cuda-python is installed"
    return out


def tensorrt_probe() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import tensorrt as trt
    except ModuleNotFoundError:
        return {"error": "not installed (Jetson: it comes with JetPack; desktop: pip install tensorrt)"}
    except Exception as exc:
        return {"error": f"does not import: {_first_line(exc)}"}
    out["version"] = trt.__version__
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        out["dla_cores"] = int(builder.num_DLA_cores)
        out["fast_int8"] = bool(getattr(builder, "platform_has_fast_int8", False))
    except Exception as exc:  # a TensorRT without a usable GPU
        out["builder_error"] = _first_line(exc)
    return out


def jetpack_probe() -> str | None:
    from .backends.tensorrt import jetpack_from_tegra_release

    release = Path("/etc/nv_tegra_release")
    if not release.is_file():
        return None
    parsed = jetpack_from_tegra_release(release.read_text(errors="replace"))
    return f"JetPack {parsed[1]} (L4T {parsed[0]})" if parsed else "an unknown L4T release"


def machine_rows() -> tuple[list[Row], dict[str, Any]]:
    """Rows for the table, and this machine's TensorRT fingerprint where it has one."""
    rows: list[Row] = [("python", f"{platform.python_version()} on {platform.machine()} {platform.system()}", None),
                       ("edgevid", _version("edgevid") or "?", None)]
    trt = tensorrt_probe()
    cuda = cuda_probe()
    jetpack = jetpack_probe()
    rows.append(("TensorRT", trt.get("version") or trt["error"], bool(trt.get("version"))))
    rows.append(("CUDA binding", cuda.get("binding") or cuda.get("error", "-"), bool(cuda.get("binding"))))
    if cuda.get("gpus"):
        rows.append(("GPU", f"{cuda['gpu']} (sm {cuda['compute_capability']}, {cuda['memory_gb']} GB)", True))
        rows.append(("CUDA", f"runtime {cuda.get('cuda')}, driver {cuda.get('cuda_driver')}", True))
    elif cuda.get("binding"):
        rows.append(("GPU", cuda.get("error", "no CUDA GPU found"), False))
    if "dla_cores" in trt:
        rows.append(("DLA", f"{trt['dla_cores']} core(s)", None))
    if trt.get("builder_error"):
        rows.append(("TensorRT builder", trt["builder_error"], False))
    rows.append(("JetPack", jetpack or "not a Jetson", None))
    for name, dist in (("ONNX Runtime", "onnxruntime"), ("OpenVINO", "openvino"), ("ExecuTorch", "executorch")):
        rows.append((name, _version(dist) or "not installed", None))
    if _version("openvino"):
        try:
            import openvino as ov

            rows.append(("OpenVINO devices", ", ".join(ov.Core().available_devices) or "none", None))
        except Exception as exc:
            rows.append(("OpenVINO devices", _first_line(exc), False))
    for name, module in (("torch", "torch"), ("PyAV", "av")):
        found = importable(module)
        rows.append((name, (_version(module) or "installed") if found else "not installed (a device runs golden"
                     " packs without it)", None))
    fingerprint = {}
    if trt.get("version") and cuda.get("gpus"):
        fingerprint = {"gpu": cuda["gpu"], "compute_capability": cuda["compute_capability"], "tensorrt": trt["version"],
                       "cuda": cuda.get("cuda")}
        if jetpack and jetpack.startswith("JetPack "):
            fingerprint["jetpack"] = jetpack.split()[1]
    return rows, fingerprint


def artifact_rows(path, machine: dict[str, Any]) -> tuple[list[Row], str | None]:
    """Rows about ``path`` on this machine, and why it cannot run here (None: it can)."""
    from .artifact import Artifact
    from .backends import get_backend

    artifact = Artifact(path)
    m = artifact.manifest
    rows: list[Row] = [("artifact", f"{artifact.path.name}: {m.backend} {m.precision} for {m.target}", None)]
    try:
        artifact.verify()
        rows.append(("files", f"{len(m.files)} file(s) match manifest.json", True))
    except EdgevidError as exc:
        rows.append(("files", str(exc), False))
        return rows, str(exc)
    backend = get_backend(m.backend)
    try:
        backend.check_open(artifact)
        runs = None
    except EdgevidError as exc:
        runs = str(exc)
    if m.backend != "tensorrt":
        rows.append(("runs here", runs or f"yes ({backend.extra} installed)", runs is None))
        return rows, runs
    from .backends import tensorrt as trt_backend
    from .targets import get_target

    target = get_target(m.target)
    if trt_backend.is_pending(artifact):
        rows.append(("engine", "pending: only the Q/DQ ONNX; build it here with"
                     f" `{trt_backend.finish_command(m.model, m.target, m.precision, artifact.path)}`", None))
        rows.append(("accuracy run here", runs or "yes: the Q/DQ ONNX under ONNX Runtime CPU", runs is None))
        if machine:
            wrong = trt_backend.target_mismatch(target, machine)
            rows.append(("engine build here", wrong or f"this is a {target.name}-kind machine", wrong is None))
        rows.append(_parse_row(artifact, machine))
        return rows, runs
    built = m.fingerprint or {}
    rows.append(("engine built for", trt_backend.describe_fingerprint(built), None))
    if not machine:
        rows.append(("fingerprint", "cannot compare: no TensorRT with a CUDA GPU here", False))
        return rows, runs or "no TensorRT with a CUDA GPU on this machine"
    diffs = trt_backend.fingerprint_mismatches(built, machine)
    rows.append(("this machine", trt_backend.describe_fingerprint(machine), not diffs))
    if diffs:
        why = (f"the engine does not fit this machine ({', '.join(diffs)} differ); rebuild it here with"
               f" `{trt_backend.finish_command(m.model, m.target, m.precision, artifact.path)}`")
        rows.append(("fingerprint", why, False))
        return rows, why
    rows.append(("fingerprint", "fits", True))
    return rows, runs


def _parse_row(artifact, machine: dict[str, Any]) -> Row:
    """This TensorRT's own parser on the Q/DQ ONNX where it is installed; else the documented rules."""
    onnx_path = artifact.file("model.onnx")
    if machine.get("tensorrt"):
        try:
            import tensorrt as trt

            from .backends.tensorrt import parser_error_lines
            from .backends.tensorrt.engine import _network_flags, _parser_errors

            logger = trt.Logger(trt.Logger.ERROR)
            builder = trt.Builder(logger)
            network = builder.create_network(_network_flags(trt))
            parser = trt.OnnxParser(network, logger)
            if parser.parse_from_file(str(onnx_path)):
                return (f"TensorRT {trt.__version__} parser", f"parses {onnx_path.name} ({network.num_layers} layers)", True)
            lines = parser_error_lines(_parser_errors(parser, onnx_path))
            return (f"TensorRT {trt.__version__} parser", lines[0] if lines else "cannot parse", False)
        except Exception as exc:
            return ("TensorRT parser", _first_line(exc), False)
    recorded = artifact.manifest.quantization.get("tensorrt_readiness")
    if not importable("onnx"):
        return ("Q/DQ readiness", f"recorded at build: {recorded}" if recorded else "no TensorRT here and no onnx to"
                " check the graph (pip install onnx)", None if recorded is None else all(v == "ok" for v in recorded.values()))
    import onnx

    from .backends.tensorrt.check import check_qdq
    from .targets import get_target

    line = get_target(artifact.manifest.target).options.get("tensorrt")
    report = check_qdq(onnx.load(str(onnx_path), load_external_data=False), str(line or "10"))
    return (f"Q/DQ rules of TensorRT {report.tensorrt}", "ok" if report.ok else report.errors[0], report.ok)


def report(artifact: str | Path | None = None) -> tuple[list[Row], str | None]:
    rows, machine = machine_rows()
    if artifact is None:
        return rows, None
    more, why = artifact_rows(artifact, machine)
    return rows + [("", "", None)] + more, why


def plain_text(rows: list[Row]) -> str:
    return "\n".join(f"{what}: {finding}" for what, finding, _ in rows if what)


if __name__ == "__main__":  # python -m edgevid.doctor [ARTIFACT]
    rows, why = report(sys.argv[1] if len(sys.argv) > 1 else None)
    print(plain_text(rows))
    sys.exit(3 if why else 0)
