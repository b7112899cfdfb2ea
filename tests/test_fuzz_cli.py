"""Property-based CLI fuzzing: generated bad arguments, manifests, gate files and packs.

For every case: no Python traceback (``main()`` raises nothing but ``SystemExit``), an exit code
from the documented set, and nothing created or changed outside the output path. Bounded
(``max_examples``) so the suite stays fast; the runs happen in-process for speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[onnx]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import harness_models as hm  # noqa: E402

from edgevid.artifact import seal_of  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.harness import golden  # noqa: E402
from edgevid.harness.golden import pack_digest  # noqa: E402

EXIT_CODES = {0, 1, 2, 3}  # ok, gate failed, bad input, missing dependency (cli.main's docstring)
FUZZ = settings(max_examples=int(os.environ.get("EDGEVID_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A pristine workspace: an artifact, a pack, a user's own files."""
    root = tmp_path_factory.mktemp("world")
    val = ensure_split("val", 6)
    shutil.copytree(hm.artifact(hm.TINY, "fp32").path, root / "art")
    golden.make_pack(hm.TINY, val, 3, root / "pack", weights="random", threads=1, chunk_videos=2)
    (root / "user").mkdir()
    (root / "user" / "thesis.txt").write_text("mine")
    (root / "user.json").write_text('{"mine": 1}')
    (root / "gates.yaml").write_text("max_top1_drop: 100\nmin_agreement: 0\n")
    return root, val


def _fingerprint(root: Path, skip: set[Path]) -> dict:
    files = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        files[path.relative_to(root).as_posix()] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else "dir")
    return files


def _run(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``edgevid ARGV`` in this process, from ``cwd``: (exit code, stderr). Any other exception fails the test."""
    from edgevid.cli import main

    env, here = dict(os.environ), os.getcwd()
    os.chdir(cwd)
    stderr, stdout = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["edgevid", *argv]
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(here)
        sys.argv = saved
        os.environ.clear()
        os.environ.update(env)
    return code, stderr.getvalue()


def _check(world_root: Path, case: Path, argv: list[str], outputs: set[Path]) -> None:
    before = _fingerprint(case, outputs)
    code, stderr = _run([a.replace("{case}", str(case)) for a in argv], cwd=case)
    assert code in EXIT_CODES, (argv, code, stderr)
    assert "Traceback" not in stderr, (argv, stderr)
    assert _fingerprint(case, outputs) == before, argv


def _case(world, tmp_path_factory) -> Path:
    root, _ = world
    case = tmp_path_factory.mktemp("case")
    shutil.copytree(root, case, dirs_exist_ok=True)
    return case


NASTY = st.sampled_from(["0", "-1", "-3", "1e309", "nan", "", " ", "abc", "99999999999999999999999", "{case}/user",
                         "{case}/user.json", "{case}/nope", "{case}", ".", "/", "\x1b[2J", "²", "{case}/art",
                         "{case}/pack", "{case}/gates.yaml", "../../etc/passwd", "1", "2"])
FLAGS = {
    "eval": ["--data", "--limit", "--threads", "--shard", "--json", "--ray-shards"],
    "golden run": ["--gates", "--threads", "--json", "--ray-shards"],
    "golden make": ["--model", "--data", "--clips", "--out", "--chunk", "--views", "--weights", "--gates"],
    "bench": ["--threads", "--seconds", "--repeats", "--json", "--md", "--baseline"],
    "verify": ["--key"],
    "report": [],
    "regress": ["--baseline", "--gates", "--section"],
    "build": ["--model", "--target", "--precision", "--num-classes", "--calib-size", "--option", "--out", "--weights"],
}
POSITIONAL = {"eval": ["{case}/art"], "golden run": ["{case}/art", "{case}/pack"], "bench": ["{case}/art"],
              "verify": ["{case}/art"], "report": ["{case}"], "regress": ["{case}/art"], "golden make": [], "build": []}


@st.composite
def bad_command(draw):
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [*command.split(), *POSITIONAL[command]]
    for flag in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=3, unique=True)) if FLAGS[command] else []:
        argv += [flag, draw(NASTY)]
    if command == "bench":
        argv += ["--seconds", "0.01", "--no-e2e"]  # keep the run short (a later value wins for repeated flags)
    return argv


@FUZZ
@given(argv=bad_command())
def test_generated_arguments(world, tmp_path_factory, argv):
    case = _case(world, tmp_path_factory)
    outputs = set()
    for flag in ("--json", "--md", "--out"):  # the output path a command may write (relative to the case folder)
        if flag in argv:
            value = argv[argv.index(flag) + 1].replace("{case}", str(case))
            outputs.add(Path(os.path.normpath(case / value)))
    if argv[0] in ("eval", "golden", "bench", "regress"):
        outputs |= {case / "art" / "report.json", case / "art" / "report.md", case / "art" / ".report.lock"}
    if argv[0] == "report":
        outputs |= {case / "report.md", case / "report.png"}
    _check(world[0], case, argv, outputs)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=12),
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
                           max_leaves=6)
MANIFEST_KEYS = ["model", "spec", "labels", "target", "backend", "device", "precision", "weights", "files", "input_shape",
                 "input_name", "fingerprint", "status", "quantization", "format_version"]


@FUZZ
@given(key=st.sampled_from(MANIFEST_KEYS), value=JSON_VALUES, reseal=st.booleans(),
       command=st.sampled_from(["eval", "golden run", "verify"]))
def test_generated_manifests(world, tmp_path_factory, key, value, reseal, command):
    case = _case(world, tmp_path_factory)
    manifest = case / "art" / "manifest.json"
    data = json.loads(manifest.read_text())
    data[key] = value
    if reseal:
        data["seal"] = seal_of(data)
    manifest.write_text(json.dumps(data))
    argv = [*command.split(), *POSITIONAL[command]] + (["--data", str(world[1]), "--no-reference"] if command == "eval" else [])
    _check(world[0], case, argv, {case / "art" / "report.json", case / "art" / "report.md", case / "art" / ".report.lock"})


@FUZZ
@given(text=st.one_of(st.text(max_size=60), st.builds(lambda d: json.dumps(d), JSON_VALUES),
                      st.sampled_from(["", "# only a comment\n", "max_top1_drop: .nan\n", "precision: {int8: {max_top1_drop: abc}}\n",
                                       "min_agreement: 101\n", "- a\n- b\n", "max_top1_drop: [1]\n", "gate_on: upper_ci\n",
                                       "\xff\xfe", "max_top1_drop: 1\nunknown: 2\n"])))
def test_generated_gate_files(world, tmp_path_factory, text):
    case = _case(world, tmp_path_factory)
    gates = case / "fuzz-gates.yaml"
    gates.write_text(text, encoding="utf-8", errors="surrogateescape")
    _check(world[0], case, ["golden", "run", "{case}/art", "{case}/pack", "--gates", str(gates)],
           {case / "art" / "report.json", case / "art" / "report.md", case / "art" / ".report.lock"})


PACK_KEYS = ["format", "model", "spec", "labels", "weights", "views", "views_per_video", "input_shape", "videos", "chunks", "gates"]


@FUZZ
@given(key=st.sampled_from(PACK_KEYS), value=JSON_VALUES, redigest=st.booleans(), flip=st.integers(-1, 3000),
       chunk_name=st.sampled_from([None, "../../user.json", "/etc/passwd", "chunk-9999.npz", "x/../chunk-0000.npz", ""]))
def test_generated_packs(world, tmp_path_factory, key, value, redigest, flip, chunk_name):
    case = _case(world, tmp_path_factory)
    info_path = case / "pack" / "pack.json"
    info = json.loads(info_path.read_text())
    info[key] = value
    if chunk_name is not None and isinstance(info.get("chunks"), list) and info["chunks"] and isinstance(info["chunks"][0], dict):
        info["chunks"][0]["file"] = chunk_name
    if redigest:
        info["digest"] = pack_digest(info)
    info_path.write_text(json.dumps(info))
    if flip >= 0:
        chunk = case / "pack" / "chunk-0000.npz"
        data = bytearray(chunk.read_bytes())
        data[flip % len(data)] ^= 0x40
        chunk.write_bytes(bytes(data))
    _check(world[0], case, ["golden", "run", "{case}/art", "{case}/pack"],
           {case / "art" / "report.json", case / "art" / "report.md", case / "art" / ".report.lock"})
