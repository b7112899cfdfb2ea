"""The device install: a wheel of this checkout in a fresh venv with the core + one runtime extra
(no torch, no PyAV) runs `edgevid golden run` on artifacts made by the full install, with the same
figures, and refuses host commands with one line naming the extra.

The wheels of the dependencies are kept in a wheelhouse under $EDGEVID_HOME keyed by the wheel's
requirements, so only the first run downloads (later runs install with ``--no-index``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the full install builds the artifacts: pip install 'edgevid[build]'")
pytest.importorskip("nncf", reason="the full install builds the artifacts: pip install 'edgevid[build-openvino]'")

import harness_models as hm  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.harness import golden  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VIDEOS = 8
LOOSE = "max_top1_drop: 100\nmin_agreement: 0\nmin_sqnr_db: 0\n"
RUNTIMES = {"onnxruntime": ("onnx-cpu", "int8"), "openvino": ("intel-cpu", "int8")}
HEAVY = ("torch", "av", "torchvision", "onnx", "nncf", "executorch")

# Runs the installed console entry point and reports which heavy modules the process imported.
WATCHED = """
import atexit, sys
heavy = {heavy!r}
atexit.register(lambda: print("IMPORTED", sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy)), file=sys.stderr))
from edgevid.cli import main
sys.argv = ["edgevid", *sys.argv[1:]]
main()
"""


def _clean_env() -> dict:
    """No PYTHONPATH (the checkout must not leak in), no venv of the test run."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["COLUMNS"] = "200"
    return env


def _run(cmd, cwd, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_clean_env())


def _requires(wheel: Path) -> list[str]:
    """The wheel's requirements for the core and the runtime extras (what the wheelhouse must hold)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = [line.split(":", 1)[1].strip() for line in zf.read(meta).decode().splitlines()
                 if line.startswith("Requires-Dist:")]
    wanted = [r for r in lines if "extra ==" not in r or re.search(r"extra == .(%s)." % "|".join(RUNTIMES), r)]
    return sorted(wanted)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, ROOT], cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("edgevid-*.whl")
    return built


@pytest.fixture(scope="module")
def wheelhouse(wheel) -> Path:
    """Wheels of the core + runtime extras' dependencies (downloaded once per requirement set)."""
    key = hashlib.sha256(json.dumps([sys.version_info[:2], _requires(wheel), sorted(RUNTIMES)]).encode()).hexdigest()[:16]
    house = Path(os.environ.get("EDGEVID_HOME", Path.home() / ".cache" / "edgevid")) / "wheelhouse" / key
    if not (house / ".complete").is_file():
        shutil.rmtree(house, ignore_errors=True)
        house.mkdir(parents=True)
        specs = [f"{wheel}[{extra}]" for extra in RUNTIMES]
        proc = _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", house, *specs], cwd=house)
        if proc.returncode != 0:
            shutil.rmtree(house, ignore_errors=True)
            pytest.fail(f"could not fill the wheelhouse from the package index: {proc.stderr.strip()[-1500:]}")
        for stale in house.glob("edgevid-*.whl"):  # always install the wheel just built
            stale.unlink()
        (house / ".complete").write_text("\n".join(specs))
    return house


@pytest.fixture(scope="module")
def made_by_full_install(tmp_path_factory):
    """A golden pack and one INT8 artifact per runtime, from this (full) install; and their host figures."""
    root = tmp_path_factory.mktemp("full")
    pack = golden.make_pack(hm.TINY, ensure_split("val", VIDEOS), VIDEOS, root / "pack", weights="random",
                            chunk_videos=4, threads=1)
    gates = root / "loose.yaml"
    gates.write_text(LOOSE)
    arts, host = {}, {}
    for extra, (target, precision) in RUNTIMES.items():
        art = hm.copy(hm.artifact(hm.TINY, precision, target=target), root / extra)
        arts[extra] = art.path
        host[extra] = golden.run_pack(art.path, pack, gates=gates, threads=1)
    return pack, gates, arts, host


def _venv(path: Path, wheel: Path, house: Path, extra: str) -> Path:
    proc = _run([sys.executable, "-m", "venv", path], cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    python = path / "bin" / "python"
    proc = _run([python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", house, f"{wheel}[{extra}]"],
                cwd=path.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return python


@pytest.mark.parametrize("extra", sorted(RUNTIMES))
def test_core_plus_one_runtime_runs_golden_without_torch_or_av(extra, wheel, wheelhouse, made_by_full_install,
                                                                 tmp_path):
    pack, gates, arts, host = made_by_full_install
    python = _venv(tmp_path / f"venv-{extra}", wheel, wheelhouse, extra)
    edgevid = python.parent / "edgevid"

    listed = _run([python, "-m", "pip", "list", "--format", "json"], cwd=tmp_path)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"edgevid", extra} <= names and not names & {"torch", "av", "onnx", "nncf"}, sorted(names)
    check = _run([python, "-m", "pip", "check"], cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    print(f"{extra}: {len(names)} packages in the venv: {', '.join(sorted(names))}")

    # the console script the wheel installed, run from elsewhere: the checkout is not on the path
    art = arts[extra]
    out = tmp_path / "golden.json"
    proc = _run([edgevid, "golden", "run", art, pack, "--gates", gates, "--threads", "1", "--json", out], cwd=tmp_path)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    device = json.loads(out.read_text())
    for key in ("status", "videos", "top1", "top5", "ref_top1", "agreement", "cosine", "sqnr_db", "max_abs_diff"):
        assert device[key] == host[extra][key], key
    assert [r["pred"] for r in device["per_video"]] == [r["pred"] for r in host[extra]["per_video"]]
    assert device["runtime"].startswith(extra) and device["runtime"] in proc.stdout

    watched = _run([python, "-c", WATCHED.format(heavy=HEAVY), "golden", "run", art, pack, "--gates", gates,
                    "--threads", "1"], cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert "IMPORTED []" in watched.stderr, watched.stderr
    where = _run([python, "-c", "import edgevid; print(edgevid.__file__)"], cwd=tmp_path).stdout
    assert str(python.parent.parent) in where, where

    # what a user runs first on the device
    listed_targets = _run([edgevid, "targets"], cwd=tmp_path)
    assert listed_targets.returncode == 0 and "pip install 'edgevid[build" in listed_targets.stdout, listed_targets.stderr
    doctor = _run([edgevid, "doctor", art], cwd=tmp_path)
    assert doctor.returncode == 0 and "not installed (a device runs golden packs without it)" in doctor.stdout, \
        doctor.stdout + doctor.stderr

    # host commands: one line naming the extra, exit 3, no traceback
    refused = _run([edgevid, "build", "--model", "x3d_synth", "--target", "onnx-cpu", "--out", tmp_path / "a"],
                   cwd=tmp_path)
    assert refused.returncode == 3 and "Traceback" not in refused.stderr, refused.stderr
    assert re.search(r"error: .*torch==2\.13\.0.*pip install 'edgevid\[build", refused.stderr), refused.stderr
    assert not (tmp_path / "a").exists()
    made = _run([edgevid, "golden", "make", "--model", "x3d_synth", "--data", "x.csv", "--clips", "2", "--out",
                 tmp_path / "p"], cwd=tmp_path)
    assert made.returncode == 3 and "pip install 'edgevid[build]'" in made.stderr, made.stderr
