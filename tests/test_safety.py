"""Never lose a user's data, never trust an edited artifact: outputs, locks, signals, seals, signatures."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[onnx]'")

import harness_models as hm  # noqa: E402
from helpers import assert_one_line_error, run_cli  # noqa: E402

from edgevid.artifact import Artifact, seal_of  # noqa: E402
from edgevid.backends import open_runner  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.errors import ArtifactError, EdgevidError  # noqa: E402
from edgevid.harness import golden  # noqa: E402
from edgevid.outputs import OutputError, commit_folder, write_output_file  # noqa: E402

TINY = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import harness_models"  # CLI prelude: the tiny test model
LOOSE = "max_top1_drop: 100\nmin_agreement: 0\nmin_sqnr_db: 0\n"


@pytest.fixture(scope="module")
def val():
    return ensure_split("val", 6)


@pytest.fixture()
def art(tmp_path):
    return hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)


@pytest.fixture(scope="module")
def pack(val, tmp_path_factory):
    return golden.make_pack(hm.TINY, val, 6, tmp_path_factory.mktemp("pack") / "pack", weights="random", threads=1)


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _reseal(path: Path, edit) -> None:
    """Edit manifest.json and recompute its seal, as an attacker who read the code would."""
    data = json.loads((path / "manifest.json").read_text())
    edit(data)
    data["seal"] = seal_of(data)
    (path / "manifest.json").write_text(json.dumps(data))


# --- data loss ---------------------------------------------------------------------------------

def test_golden_make_refuses_a_users_folder_and_keeps_it(tmp_path, val):
    thesis = tmp_path / "mine" / "thesis.txt"
    thesis.parent.mkdir()
    thesis.write_text("three years of work")
    proc = run_cli("golden", "make", "--model", hm.TINY, "--data", str(val), "--clips", "2", "--out", str(thesis.parent),
                   "--weights", "random", prelude=TINY)
    assert_one_line_error(proc, "already exists", "not an edgevid pack")
    assert thesis.read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left


def test_golden_make_refuses_a_file_and_the_current_folder(tmp_path, val):
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0")
    proc = run_cli("golden", "make", "--model", hm.TINY, "--data", str(val), "--clips", "2", "--out", str(victim),
                   "--weights", "random", prelude=TINY)
    assert_one_line_error(proc, "a file (or link) is there")
    assert victim.read_text() == "root:x:0:0"
    proc = subprocess.run([sys.executable, "-c", f"{TINY}\nimport sys\nfrom edgevid.cli import main\n"
                           f"sys.argv=['edgevid','golden','make','--model','{hm.TINY}','--data',{str(val)!r},'--clips','2',"
                           "'--out','.','--weights','random']\nmain()"],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert_one_line_error(proc, "current folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]


def test_an_existing_pack_is_replaced_only_with_overwrite(tmp_path, val):
    out = tmp_path / "pack"
    golden.make_pack(hm.TINY, val, 2, out, weights="random", threads=1)
    first = (out / "pack.json").read_text()
    with pytest.raises(OutputError, match="pass --overwrite"):
        golden.make_pack(hm.TINY, val, 3, out, weights="random", threads=1)
    assert (out / "pack.json").read_text() == first
    golden.make_pack(hm.TINY, val, 3, out, weights="random", threads=1, overwrite=True)
    assert len(golden.load_pack(out).videos) == 3
    (out / "notes.txt").write_text("mine")  # a pack holding a user's file is no longer only edgevid's
    with pytest.raises(OutputError, match="files edgevid did not write"):
        golden.make_pack(hm.TINY, val, 2, out, weights="random", threads=1, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_build_never_replaces_a_folder_it_did_not_build(tmp_path):
    mine = tmp_path / f"{hm.TINY}-onnx-cpu-fp32"
    mine.mkdir()
    (mine / "data.csv").write_text("precious")
    proc = run_cli("build", "--model", hm.TINY, "--target", "onnx-cpu", "--precision", "fp32", "--weights", "random",
                   "--out", str(tmp_path), prelude=TINY)
    assert_one_line_error(proc, "not an edgevid artifact")
    assert (mine / "data.csv").read_text() == "precious"


def test_rebuilding_an_artifact_replaces_it_atomically(tmp_path):
    from edgevid.build import build_artifact

    first = build_artifact(hm.TINY, "onnx-cpu", "fp32", weights="random", out=tmp_path)
    created = first.manifest.created
    time.sleep(1.1)
    second = build_artifact(hm.TINY, "onnx-cpu", "fp32", weights="random", out=tmp_path)
    assert second.path == first.path and second.manifest.created != created
    second.verify()
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]


def test_single_file_outputs_replace_only_their_own(tmp_path, art, val):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    proc = run_cli("eval", str(art.path), "--data", str(val), "--no-reference", "--json", str(notes), prelude=TINY)
    assert_one_line_error(proc, "--json", "not written by edgevid eval")
    assert notes.read_text() == '{"mine": true}'
    assert not (art.path / "report.json").exists()  # refused before the run, not after it
    result = tmp_path / "result.json"
    for _ in range(2):  # the second run replaces the file the first one wrote
        proc = run_cli("eval", str(art.path), "--data", str(val), "--no-reference", "--json", str(result), "--restart", prelude=TINY)
        assert proc.returncode == 0, proc.stderr
    assert json.loads(result.read_text())["videos"] == 6
    proc = run_cli("eval", str(art.path), "--data", str(val), "--json", str(tmp_path), prelude=TINY)
    assert_one_line_error(proc, "is a folder")


def test_unwritable_json_is_refused_before_the_run(tmp_path, art, val):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("eval", str(art.path), "--data", str(val), "--json", str(blocker / "out.json"), prelude=TINY)
    assert_one_line_error(proc, "is a file, not a folder")
    assert not (art.path / "report.json").exists()


def test_new_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with commit_folder(tmp_path / "p", "pack") as tmp:
            (tmp / "pack.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o755


def _commit_many(args):
    root, worker, rounds = args
    failures = 0
    for i in range(rounds):
        try:
            with commit_folder(Path(root) / "art", "pack", overwrite=True) as tmp:
                (tmp / "pack.json").write_text(json.dumps({"format": 1, "digest": "x", "chunks": [], "by": [worker, i]}))
        except Exception:  # noqa: BLE001 - counted and asserted on
            failures += 1
    return failures


def test_concurrent_writers_never_fail_or_leave_debris(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        failures = pool.map(_commit_many, [(str(tmp_path), w, 40) for w in range(4)])
    assert sum(failures) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["art"]
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["pack.json"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_during_a_build_leave_nothing(tmp_path, sig):
    code = (f"{TINY}\nimport sys, time\nfrom edgevid.cli import main\nimport edgevid.build as b\n"
            "real = b.get_backend\n"
            "def slow(name):\n    backend = real(name)\n    orig = backend.build\n"
            "    def build(req):\n        open(req.out_dir / 'started', 'w').close(); time.sleep(60); return orig(req)\n"
            "    backend.build = build\n    return backend\n"
            "b.get_backend = slow\n"
            f"sys.argv=['edgevid','build','--model','{hm.TINY}','--target','onnx-cpu','--precision','fp32','--weights','random','--out',{str(tmp_path)!r}]\nmain()")
    # Ctrl-C in a terminal: the child starts with SIGINT at its default. Under the full suite the
    # test process can leave SIGINT ignored (something an earlier test loads), and an ignored SIGINT
    # is inherited, so Python would never raise KeyboardInterrupt (as for a `cmd &` job in a script).
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(tmp_path.glob(".*tmp-*/started")):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


# --- integrity ---------------------------------------------------------------------------------

def test_an_unlisted_model_file_is_refused(art):
    _reseal(art.path, lambda m: m.update(files={}))
    with (art.path / "model.onnx").open("r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ArtifactError, match="not listed in manifest.json"):
        open_runner(art.path)


@pytest.mark.parametrize("edit", [
    lambda m: m["spec"]["norm"].update(mean=[9.45, 0.45, 0.45]),
    lambda m: m.update(labels=list(reversed(m["labels"]))),
    lambda m: m.update(precision="int8"),
])
def test_any_manifest_edit_breaks_the_seal(art, edit):
    data = json.loads((art.path / "manifest.json").read_text())
    edit(data)
    (art.path / "manifest.json").write_text(json.dumps(data))
    proc = run_cli("eval", str(art.path), "--data", "x.csv", prelude=TINY)
    assert_one_line_error(proc, "was edited after the build")


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.update(precision="fp33"), "precision"),
    (lambda m: m.update(backend="tensorflow"), "backend"),
    (lambda m: m["spec"]["clip"].update(crop=64), "disagrees with the spec"),
    (lambda m: m["spec"]["clip"].update(frames=16), "disagrees with the spec"),
    (lambda m: m["spec"].update(num_classes=5), "labels for the spec's num_classes"),
    (lambda m: m["files"].update({"../../etc/passwd": "0" * 64}), "not a normalised path"),
    (lambda m: m["files"].update({"/etc/passwd": "0" * 64}), "not a normalised path"),
    (lambda m: m["files"].update({"report.json": "0" * 64}), "cannot be hashed"),
])
def test_resealed_nonsense_is_a_one_line_error(art, edit, fragment):
    _reseal(art.path, edit)
    proc = run_cli("eval", str(art.path), "--data", "x.csv", prelude=TINY)
    assert_one_line_error(proc, "is invalid", fragment)


def test_files_outside_the_artifact_are_never_opened(art, tmp_path):
    outside = tmp_path / "secret"
    outside.write_text("s")
    (art.path / "link.onnx").symlink_to(outside)
    _reseal(art.path, lambda m: m["files"].update({"link.onnx": "0" * 64}))
    with pytest.raises(ArtifactError, match="points outside the artifact"):
        Artifact(art.path).verify()


def test_an_added_file_is_refused(art):
    (art.path / "model.onnx.data").write_bytes(b"planted external data")
    with pytest.raises(ArtifactError, match="model.onnx.data is not listed"):
        open_runner(art.path)


def test_corrupt_report_is_one_line_and_does_not_hide_other_artifacts(tmp_path):
    a = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path / "arts")
    b = hm.copy(hm.artifact(hm.TINY, "fp32", target="torch-cpu"), tmp_path / "arts")
    (a.path / "report.json").write_text("{not json")
    b.update_report("bench", {"runs": {}})
    proc = run_cli("report", str(tmp_path / "arts"), prelude=TINY)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and b.path.name in proc.stdout and "skipping" in proc.stderr
    proc = run_cli("eval", str(a.path), "--data", str(ensure_split("val", 6)), "--no-reference", prelude=TINY)
    assert_one_line_error(proc, "report.json is corrupt")


def test_report_does_not_replace_a_users_report_md(tmp_path):
    hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)
    (tmp_path / "report.md").write_text("my own report")
    proc = run_cli("report", str(tmp_path), prelude=TINY)
    assert_one_line_error(proc, "not written by edgevid report")
    assert (tmp_path / "report.md").read_text() == "my own report"


# --- gates -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "# no gates yet\n", "precision: {}\n"])
def test_empty_gates_are_an_error_not_a_pass(tmp_path, art, pack, text):
    gates = tmp_path / "gates.yaml"
    gates.write_text(text)
    proc = run_cli("golden", "run", str(art.path), str(pack), "--gates", str(gates), prelude=TINY)
    assert_one_line_error(proc, "sets no gates")


def test_gates_in_a_pack_are_covered_by_its_digest(tmp_path, val, art):
    gates = tmp_path / "g.yaml"
    gates.write_text(LOOSE)
    out = golden.make_pack(hm.TINY, val, 2, tmp_path / "pack", weights="random", threads=1, gates_file=gates)
    assert golden.run_pack(art.path, out)["gates"]["source"].endswith("gates.yaml")
    (out / "gates.yaml").write_text("max_top1_drop: 1000\n")
    with pytest.raises(EdgevidError, match="does not match its sha256"):
        golden.load_pack(out)
    planted = golden.make_pack(hm.TINY, val, 2, tmp_path / "p2", weights="random", threads=1)
    (planted / "gates.yaml").write_text(LOOSE)
    with pytest.raises(EdgevidError, match="not covered by the pack's digest"):
        golden.load_pack(planted)


# --- signing -----------------------------------------------------------------------------------

def _each_byte_flipped(folder: Path, names):
    """For each name: restore ``folder``, flip one byte in the middle of that file, yield the name."""
    pristine = folder.parent / f"{folder.name}.pristine"
    shutil.copytree(folder, pristine)
    for name in names:
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder)
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2] ^= 1
        (folder / name).write_bytes(bytes(data))
        yield name


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from edgevid.signing import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    return generate_keypair(folder / "ci") + generate_keypair(folder / "other")


def test_signed_artifact_verifies_and_any_tampering_is_refused(tmp_path, keys):
    private, public, _, other = keys
    out = tmp_path / "arts"
    proc = run_cli("build", "--model", hm.TINY, "--target", "onnx-cpu", "--precision", "fp32", "--weights", "random",
                   "--out", str(out), "--sign", str(private), prelude=TINY)
    assert proc.returncode == 0, proc.stderr
    path = out / f"{hm.TINY}-onnx-cpu-fp32"
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    proc = run_cli("verify", str(path), "--key", str(public))
    assert proc.returncode == 0 and "signed by key" in proc.stderr, proc.stderr
    assert_one_line_error(run_cli("verify", str(path), "--key", str(other)), "not valid for this key")
    proc = run_cli("--require-signature", str(public), "eval", str(path), "--data", str(ensure_split("val", 6)),
                   "--no-reference", prelude=TINY)
    assert proc.returncode == 0, proc.stderr
    for name in _each_byte_flipped(path, ("model.onnx", "manifest.json", "signature.json")):
        proc = run_cli("verify", str(path), "--key", str(public))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.stderr)


def test_unsigned_artifacts_are_refused_when_a_signature_is_required(art, keys, val):
    _, public, _, _ = keys
    proc = run_cli("eval", str(art.path), "--data", str(val), "--no-reference", prelude=TINY,
                   env={"EDGEVID_REQUIRE_SIGNATURE": str(public)})
    assert_one_line_error(proc, "is not signed")


def test_signed_pack_tampering_is_refused(tmp_path, val, keys, art):
    private, public, _, _ = keys
    gates = tmp_path / "g.yaml"
    gates.write_text(LOOSE)
    out = golden.make_pack(hm.TINY, val, 2, tmp_path / "pack", weights="random", threads=1, gates_file=gates, sign=private)
    assert run_cli("verify", str(out), "--key", str(public)).returncode == 0
    for name in _each_byte_flipped(out, ("chunk-0000.npz", "gates.yaml", "pack.json", "signature.json")):
        proc = run_cli("verify", str(out), "--key", str(public))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.stderr)
        proc = run_cli("--require-signature", str(public), "golden", "run", str(art.path), str(out), prelude=TINY)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.stderr)


# --- bad input ---------------------------------------------------------------------------------

def test_nan_weights_are_refused_at_load(tmp_path):
    import torch

    state = hm.TinyVideoNet().state_dict()
    state["res.weight"][0, 0, 0, 0, 0] = float("nan")
    ckpt = tmp_path / "diverged.pt"
    torch.save(state, ckpt)
    proc = run_cli("build", "--model", hm.TINY, "--target", "onnx-cpu", "--precision", "fp32", "--weights", str(ckpt),
                   "--out", str(tmp_path / "out"), prelude=TINY)
    assert_one_line_error(proc, str(ckpt), "res.weight", "NaN/Inf")
    assert not (tmp_path / "out").exists()


def test_unreachable_ray_fails_fast(art, val):
    started = time.perf_counter()
    proc = run_cli("eval", str(art.path), "--data", str(val), "--ray", "127.0.0.1:6390", prelude=TINY, timeout=120)
    assert time.perf_counter() - started < 60
    assert_one_line_error(proc, "--ray 127.0.0.1:6390", "no Ray cluster answers")


@pytest.mark.parametrize("args", [
    ["eval", "ART", "--data", "VAL", "--limit", "0"],
    ["eval", "ART", "--data", "VAL", "--limit", "-1"],
    ["eval", "ART", "--data", "VAL", "--threads", "-1"],
    ["build", "--model", hm.TINY, "--target", "onnx-cpu", "--num-classes", "0"],
    ["build", "--model", hm.TINY, "--target", "onnx-cpu", "--num-classes", "-3"],
    ["build", "--model", hm.TINY, "--target", "onnx-cpu", "--calib-size", "0"],
    ["bench", "ART", "--seconds", "-1"],
])
def test_nonsense_numbers_are_usage_errors(args, art, val):
    args = [str(art.path) if a == "ART" else str(val) if a == "VAL" else a for a in args]
    proc = run_cli(*args, prelude=TINY)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "Invalid value" in proc.stderr


def test_unknown_option_key_has_a_did_you_mean(tmp_path):
    proc = run_cli("build", "--model", hm.TINY, "--target", "onnx-cpu", "--precision", "int8", "--weights", "random",
                   "--option", "calibrate_methd=minmax", "--out", str(tmp_path), prelude=TINY)
    assert_one_line_error(proc, "calibrate_methd", "Did you mean calibrate_method")
    proc = run_cli("build", "--model", hm.TINY, "--target", "onnx-cpu", "--precision", "int8", "--weights", "random",
                   "--option", "calibrate_method=magic", "--out", str(tmp_path), prelude=TINY)
    assert_one_line_error(proc, "calibrate_method='magic'")
    assert list(tmp_path.iterdir()) == []


def test_terminal_escapes_in_paths_are_printed_escaped(tmp_path):
    evil = tmp_path / "a\x1b[2Jb.csv"  # does not exist: the error names it
    proc = run_cli("eval", str(hm.artifact(hm.TINY, "fp32").path), "--data", str(evil), prelude=TINY)
    assert proc.returncode != 0
    assert "\x1b[2J" not in proc.stderr and "\\x1b[2J" in proc.stderr, proc.stderr


def test_a_full_disk_is_one_line(tmp_path, art, val):
    """A real full file system (a 1 MB tmpfs); skipped where this process may not mount one."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN) to fill a disk for real")
    try:
        with open(mnt / "filler", "wb", buffering=0) as handle:  # fill it up
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError:
                pass
        proc = run_cli("bench", str(art.path), "--seconds", "0.05", "--no-e2e", "--json", str(mnt / "bench.json"), prelude=TINY)
        assert_one_line_error(proc)
        assert "no space left" in proc.stderr or "cannot write" in proc.stderr, proc.stderr
    finally:
        subprocess.run(["umount", str(mnt)])


def test_write_output_file_refuses_symlinks(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "out.json").symlink_to(target)
    with pytest.raises(OutputError):
        write_output_file(tmp_path / "out.json", "{}", "eval")
    assert target.read_text() == "keep"
