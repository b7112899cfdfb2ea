"""The Gradio streaming demo: localhost by default, sessions that never share stream state, and a real
browser (Debian's Chromium driven by Playwright) whose fake camera plays a SynthMotion clip."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from edgevid.models.weights import SHIPPED

gradio = pytest.importorskip("gradio", reason="the demo needs gradio: pip install 'edgevid[demo]'")

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("EDGEVID_TEST_ARTIFACTS", REPO / ".cache" / "test-artifacts"))
REFERENCE = SHIPPED / "x3d_synth.pt"
NO_REFERENCE = "reference weights edgevid/models/weights/x3d_synth.pt not present yet (being trained)"
# Val clips whose looped stream (Chromium loops the fake camera's file) the reference model labels
# right after warm-up (test_chosen_clips_loop_correctly_offline): the browser test checks the
# pipeline, not the model. Looping is hard on a motion model: where the clip jumps back to its
# first frame a window sees the opposite motion, and for most clips some seam window is labelled
# wrong (of val seeds 1_000_000-1_000_023, four loop cleanly with the shipped weights).
LOOPING_SEEDS = (1_000_008, 1_000_005)  # move_left, rotate_ccw
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def load_demo():
    spec = importlib.util.spec_from_file_location("edgevid_demo_app", REPO / "demo" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def artifacts():
    """x3d_synth for torch-cpu and onnx-cpu FP32 (reference weights when shipped, else random), cached."""
    from edgevid.bench import ensure_artifact
    from edgevid.paths import edgevid_home
    from edgevid.targets import get_target

    weights = None if REFERENCE.is_file() else "random"
    out = edgevid_home() / "test-demo" / ("reference" if weights is None else "random")
    return [ensure_artifact("x3d_synth", get_target(t), "fp32", out, weights, None, None, False)[0]
            for t in ("torch-cpu", "onnx-cpu")]


class Server(NamedTuple):
    url: str
    port: int
    log: Path
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(artifacts, tmp_path_factory):
    """`edgevid demo ARTIFACTS --port P` as a user starts it; yields (url, port)."""
    port = free_port()
    code = f"import sys; from edgevid.cli import main; sys.argv = ['edgevid', 'demo', *{[str(a) for a in artifacts]!r}," \
           f" '--port', '{port}', '--threads', '1']; main()"
    log = open(tmp_path_factory.mktemp("demo") / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"demo server did not start (exit {proc.poll()}); see {log.name}")
            time.sleep(1)
    yield Server(url, port, Path(log.name), proc.pid)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    # the server's private sample folder goes with it (SIGTERM as a service manager sends it)
    folders = re.findall(r"sample clips in (\S*edgevid-demo-\S+)", Path(log.name).read_text())
    assert len(folders) == 1 and not Path(folders[0]).exists(), folders


def test_build_app_uses_the_registry_and_samples_it_is_given(artifacts, tmp_path):
    """An empty registry / sample cache is falsy (len 0): `x or New()` silently made second ones, so
    the server's session bound was not the one launched and its sample folder was never removed."""
    demo = load_demo()
    pool, registry, samples = demo.RunnerPool(threads=1), demo.SessionRegistry(limit=3), demo.SampleCache(parent=tmp_path)
    try:
        app = demo.build_app(artifacts, pool=pool, registry=registry, samples=samples)
        assert app.edgevid_sessions is registry and app.edgevid_samples is samples and app.edgevid_pool is pool
        assert list(tmp_path.iterdir()) == [samples.folder]
    finally:
        samples.close()
        pool.close()


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


# --- sessions, runners, samples (no browser) -------------------------------------------------------

def test_sample_files_are_private_bounded_removed_and_the_seed_is_checked(tmp_path, monkeypatch):
    """Regression (safety issue): the sample was written to a predictable name in the system temp
    folder, following a planted symlink, never removed; seed=-1 was a traceback."""
    import stat
    import tempfile

    demo = load_demo()
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    victim = tmp_path / "elsewhere.mp4"
    seed = 1_000_003
    (system_tmp / f"edgevid-synthmotion-{seed}.mp4").symlink_to(victim)  # planted at the old predictable name
    samples = demo.SampleCache(limit=2)
    try:
        folder = samples.folder
        assert folder.parent == system_tmp and stat.S_IMODE(folder.stat().st_mode) == 0o700
        path, truth = samples.get(seed)
        assert not victim.exists() and path.parent == folder and not path.is_symlink() and path.stat().st_size > 0
        assert truth == load_demo_labels()[seed % 8]
        assert samples.get(str(seed)) == (path, truth)  # cached; the seed as the browser may send it
        for other in (5, 6, 7):
            samples.get(other)
        assert len(samples) == 2 and len(list(folder.iterdir())) == 2  # bounded: the oldest removed
        for bad in (-1, 1.5, "x", None, float("nan"), demo.SEED_MAX + 1):
            with pytest.raises(demo.DemoInputError, match="use a whole number from 0 to") as info:
                samples.get(bad)
            assert "\n" not in str(info.value)
    finally:
        samples.close()
    assert not folder.exists()


def test_runner_pool_opens_each_artifact_under_its_own_lock(tmp_path):
    """A runner that takes long to open (15 s for torch-cpu) holds up only streams on that artifact."""
    import threading

    demo = load_demo()
    slow, fast = tmp_path / "slow", tmp_path / "fast"
    release, opened = threading.Event(), []

    def opener(path, threads):
        opened.append((path, threads))
        if path == slow:
            assert release.wait(30)
        return demo.PooledRunner(object(), threading.Lock(), None, threads)

    pool = demo.RunnerPool(threads=1, opener=opener)
    waiting = [threading.Thread(target=pool.get, args=(slow,)) for _ in range(2)]
    for thread in waiting:
        thread.start()
    deadline = time.monotonic() + 10
    while not opened and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    got = pool.get(fast)  # while `slow` is still opening
    assert time.monotonic() - started < 1 and got.threads == 1 and all(t.is_alive() for t in waiting)
    release.set()
    for thread in waiting:
        thread.join(10)
    assert opened == [(slow, 1), (fast, 1)]  # each opened once, the slow one despite two callers
    assert pool.get(slow) is pool.get(slow, 1) and pool.get(slow, 2) is not pool.get(slow, 1)


def test_threads_per_runner_come_from_the_cores_and_the_targets():
    from edgevid.bench import usable_cores

    demo = load_demo()
    cores = usable_cores()
    pool = demo.RunnerPool()
    for targets in (1, 2, 3, 4):
        threads, why = pool.threads_for(targets)
        assert threads == (max(1, (cores - 1) // targets) if cores > 1 else 1) and f"{cores} core" in why
    assert demo.RunnerPool(threads=3).threads_for(2) == (3, "--threads")


def test_streams_keep_a_core_for_decoding():
    from edgevid.streaming import stream_runner_threads

    assert stream_runner_threads(1, 1) == (1, "1 core")
    assert stream_runner_threads(2, 1) == (1, "2 cores: 1 for decoding, 1 for 1 target")
    assert stream_runner_threads(8, 2) == (3, "8 cores: 1 for decoding, 7 for 2 targets")
    assert stream_runner_threads(4, 4)[0] == 1  # never 0


def live_threads(prefix: str = "edgevid-") -> int:
    import threading

    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_session_registry_bounds_live_sessions_and_releases_their_threads(artifacts):
    from edgevid.data.synthmotion import FPS, generate_clip

    demo = load_demo()
    pool = demo.RunnerPool(threads=1)
    registry = demo.SessionRegistry(limit=2, idle_seconds=30)
    frames = generate_clip(1_000_000)[0]
    idle_threads = live_threads()

    def stream(key):
        session = registry.open(key, lambda: demo.Session(pool, artifacts))
        for i in range(24):
            session.push(frames[i], i / FPS, 0.0)
        session.drain()
        return session

    a, b = stream("a"), stream("b")
    assert len(registry) == 2 and live_threads() == idle_threads + 4  # a worker per target per session
    with pytest.raises(demo.ServerFull, match="close another tab"):
        registry.open("c", lambda: demo.Session(pool, artifacts))
    a.last_active -= 31  # tab a left open, no frames for over idle_seconds: evicted for the newcomer
    c = stream("c")
    assert len(registry) == 2 and a.closed and registry.get("a") is None and registry.get("c") is c
    assert registry.release("b", closed=True) and b.closed
    assert registry.open("b", lambda: demo.Session(pool, artifacts)) is None  # a frame in flight from a closed tab
    registry.release("c", closed=True)
    assert len(registry) == 0
    assert wait_until(lambda: live_threads() == idle_threads), (live_threads(), idle_threads)
    pool.close()


def test_a_released_session_frees_its_buffers_at_once(artifacts):
    """Each stream's callback refers back to its session: unless close breaks that cycle, a closed
    session's rings and clips (MBs) wait for a full garbage collection (server RSS grew ~5 MB a tab)."""
    import gc
    import weakref

    from edgevid.data.synthmotion import FPS, generate_clip

    demo = load_demo()
    pool = demo.RunnerPool(threads=1)
    registry = demo.SessionRegistry()
    frames = generate_clip(1_000_000)[0]
    gc.collect()
    gc.disable()
    try:
        session = registry.open("tab", lambda: demo.Session(pool, artifacts))
        for i in range(24):
            session.push(frames[i], i / FPS, 0.0)
        session.drain()
        refs = [weakref.ref(session), *(weakref.ref(c) for c in session.classifiers.values())]
        del session
        registry.release("tab", closed=True)
        assert wait_until(lambda: all(ref() is None for ref in refs), 10), [ref() for ref in refs]
    finally:
        gc.enable()
        pool.close()


def benched_copy(artifact: Path, folder: Path, p50_ms: float) -> Path:
    """A copy of ``artifact`` whose report holds an `edgevid bench` figure at 1 thread."""
    import json

    copy = folder / artifact.name
    shutil.copytree(artifact, copy)
    (copy / "report.json").write_text(json.dumps({"bench": {"threads": 1, "runs": {"artifact": {"p50_ms": p50_ms}}}}))
    return copy


def test_stats_hint_chart_and_bench_figure(artifacts, tmp_path):
    """The hint follows the ticked artifacts; the chart has only the session's series and starts
    at its first point; the bench figure comes from the artifact's report."""
    from edgevid.data.synthmotion import FPS, generate_clip

    demo = load_demo()
    assert "Pick one or more artifacts" in demo.stats_html(None, selected=[])
    ticked = demo.stats_html(None, selected=[a.name for a in artifacts])
    assert "Pick one" not in ticked and all(a.name in ticked for a in artifacts)
    copy = benched_copy(artifacts[1], tmp_path, p50_ms=4.0)
    pool = demo.RunnerPool(threads=1)
    session = demo.Session(pool, [copy])
    frames = generate_clip(1_000_000)[0]
    time.sleep(0.3)  # the first window lands after t = 0
    for i in range(32):
        session.push(frames[i], i / FPS, 0.0)
        session.drain()
    target = session.manifests[copy].target
    for kind in demo.KINDS:  # one legend entry per ticked target, none for the server's other artifacts
        chart = demo.chart_frame(session, kind)
        assert set(chart["series"]) == {f"{target} fp32"} and chart["fps"].notna().all()
        assert chart["t"].min() > 0.2  # no padding rows pinning the time axis at 0 s
    page = demo.stats_html(session)
    assert "data-bench='250.000'" in page and "@1t" in page and "threads per runner: 1" in page
    assert "smoothed probability of the top-1 label" in page and "warm-up" in page
    session.close()
    pool.close()


def test_demo_model_only_fps_is_benchs_own_measurement(artifacts, tmp_path, monkeypatch):
    """The demo's model-only FPS and `edgevid bench`'s are one measurement (``bench.time_runner``: bench's
    input, warm-up, stopping rule and p50), not the in-stream median, which a paced source slows down.
    The clock is replaced by fixed samples so the figures are exact; the runners are real."""
    import numpy as np

    import edgevid.bench as bench
    from edgevid.data.synthmotion import FPS, generate_clip

    timed = []

    def fixed_clock(fn, **options):  # what bench's timing loop would call, run once; fixed 2.0 ms samples
        timed.append(np.asarray(fn()))
        return bench.summarize([2.0] * 20)

    monkeypatch.setattr(bench, "time_callable", fixed_clock)
    demo = load_demo()
    copy = benched_copy(artifacts[1], tmp_path, p50_ms=2.0)
    pool = demo.RunnerPool(threads=1)
    session = demo.Session(pool, [copy])
    frames = generate_clip(1_000_000)[0]
    for i in range(32):
        session.push(frames[i], i / FPS, 0.0)
    session.drain()
    page = demo.stats_html(session)
    model = re.search(r"class='num fps-model'[^>]*data-value='([0-9.]+)'", page).group(1)
    stream = re.search(r"class='num fps-stream'[^>]*data-value='([0-9.]+)'", page).group(1)
    assert model == "500.000" and float(stream) > 0  # 1000 / p50 of bench's timing, and the stream's own figure apart
    assert "data-ratio='1.000'" in page and "data-agree='1'" in page and "in-stream inference" in page
    session.close()
    pool.close()
    worker = bench._worker("artifact", str(copy), 1, 0.1)  # what `edgevid bench` runs in its subprocess
    assert worker["p50_ms"] == 2.0 and len(timed) == 2
    assert timed[0].shape == timed[1].shape and np.array_equal(timed[0], timed[1])  # same runner, same input


def test_a_broken_file_is_named_by_its_own_name(tmp_path):
    from edgevid.errors import DataError
    from edgevid.streaming import iter_video_frames

    demo = load_demo()
    upload = tmp_path / "gradio" / "3f9c" / "holiday clip.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"not a video at all" * 100)
    with pytest.raises(DataError) as info:
        next(iter_video_frames(upload))
    message = demo.file_error(info.value, upload, upload.name)
    assert message.startswith("holiday clip.mp4: ") and str(tmp_path) not in message and "\n" not in message


# --- a running server --------------------------------------------------------------------------

def test_demo_binds_to_localhost_only_by_default(server):
    assert listening_addresses(server.port) == {"127.0.0.1"}


def test_host_and_share_are_explicit_opt_ins():
    from helpers import run_cli

    proc = run_cli("demo", "--help")
    assert proc.returncode == 0
    text = re.sub(r"\s+", " ", proc.stdout)
    assert "--share" in text and "--host" in text and "127.0.0.1" in text


def test_sessions_do_not_share_stream_state(artifacts):
    """Two sessions streaming different clips, frames interleaved, each give what they give alone."""
    from edgevid.data.synthmotion import FPS, generate_clip

    demo = load_demo()
    pool = demo.RunnerPool(threads=1)
    clips = [generate_clip(1_000_000)[0], generate_clip(1_000_003)[0]]

    def run(sessions_and_clips):
        for i in range(32):
            for session, frames in sessions_and_clips:
                session.push(frames[i], i / FPS, 0.0)
                session.drain()  # every window classified: the comparison does not depend on thread timing
        return [[(r.top_k, r.raw_top1) for r in [s.latest[p] for p in s.selected]] for s, _ in sessions_and_clips]

    alone = [run([(demo.Session(pool, artifacts), clip)])[0] for clip in clips]
    together = run([(demo.Session(pool, artifacts), clip) for clip in clips])
    assert together == alone
    pool.close()


@pytest.mark.skipif(not REFERENCE.is_file(), reason=NO_REFERENCE)
def test_chosen_clips_loop_correctly_offline(artifacts):
    """The clips of the browser test, looped at 15 fps as the fake camera plays them, without a browser."""
    from edgevid.artifact import Artifact
    from edgevid.backends import open_runner
    from edgevid.data.synthmotion import CLASSES, FPS, generate_clip
    from edgevid.streaming import StreamClassifier

    artifact = Artifact(artifacts[1])  # ONNX Runtime FP32
    with open_runner(artifact, threads=1) as runner:
        for seed in LOOPING_SEEDS:
            frames, label = generate_clip(seed)
            stream = StreamClassifier(runner, artifact.manifest.spec, artifact.labels)
            shown = [r.label for i in range(128) if (r := stream.push(frames[i % 32], i / FPS))]
            assert shown[8:] == [CLASSES[label]] * len(shown[8:]), (seed, shown)


# --- a real browser ---------------------------------------------------------------------------

def _browser_ready() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed: pip install 'edgevid[dev]'"
    if not Path(CHROMIUM).is_file():
        return f"Debian's chromium is not installed at {CHROMIUM}: make install-browser (apt-get install chromium)"
    return None


needs_browser = pytest.mark.skipif(_browser_ready() is not None, reason=_browser_ready() or "")


@contextmanager
def browser_pages(url: str, *y4ms: Path):
    """One page per ``y4m``, each in its own headless Chromium whose fake camera plays that file,
    streaming the webcam to the demo (one browser per camera: the fake camera is per process)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browsers = []
        try:
            pages = []
            for y4m in y4ms:
                browsers.append(playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={y4m}"]))
                page = browsers[-1].new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(180_000)
                page.goto(url)
                pages.append(page)
            for page in pages:
                page.get_by_text("Click to Access Webcam").click()
                page.get_by_role("button", name="capture photo").click()  # Gradio's record (= stream) button
            yield pages
        finally:
            for browser in browsers:
                browser.close()


def rows(page) -> dict[str, dict]:
    """The stats table, per artifact: top-1, FPS figures, sampled/frames, source fps."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#edgevid-stats table.main tr[data-artifact]')].map(r => [
        r.dataset.artifact, {top1: r.querySelector('.top1').textContent, model: parseFloat(r.querySelector('.fps-model').dataset.value),
        e2e: parseFloat(r.querySelector('.fps-e2e').dataset.value), windows: parseInt(r.querySelector('.windows').textContent),
        sampled: r.querySelector('.sampled').textContent}]))""")


def wait_for(page, condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = rows(page)
        if got and condition(got):
            return got
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}; last stats: {rows(page)}")


def y4m_of(seed: int, folder: Path) -> tuple[Path, str]:
    from edgevid.data.synthmotion import CLASSES, FPS, generate_clip
    from edgevid.data.video import write_y4m

    frames, label = generate_clip(seed)
    return write_y4m(folder / f"synthmotion-{seed}.y4m", frames, FPS), CLASSES[label]


@needs_browser
def test_browser_webcam_stream_shows_labels_and_fps_for_every_target(server, artifacts, tmp_path):
    url = server.url
    y4m, _ = y4m_of(1_000_002, tmp_path)
    with browser_pages(url, y4m) as (page,):
        got = wait_for(page, lambda r: len(r) == 2 and all(v["windows"] >= 3 and v["model"] > 0 and v["e2e"] > 0 for v in r.values()),
                       240, "three windows with FPS figures on both targets")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "demo-webcam.png", full_page=True)
    names = {a.name for a in artifacts}
    assert set(got) == names
    for row in got.values():
        assert row["model"] > 0 and row["e2e"] > 0 and row["e2e"] <= row["model"] * 1.05
        assert row["top1"] in load_demo_labels()
    first, second = got.values()
    assert first["sampled"] == second["sampled"]  # every target saw the same frames


def load_demo_labels() -> list[str]:
    from edgevid.data.synthmotion import CLASSES

    return list(CLASSES)


@needs_browser
@pytest.mark.skipif(not REFERENCE.is_file(), reason=NO_REFERENCE)
def test_browser_label_is_the_clip_class_in_two_concurrent_sessions(server, tmp_path):
    """Two browsers, each with its own fake camera and clip class, stream at the same time."""
    url = server.url
    cameras = [y4m_of(seed, tmp_path) for seed in LOOPING_SEEDS]
    assert cameras[0][1] != cameras[1][1]
    with browser_pages(url, cameras[0][0], cameras[1][0]) as (page_a, page_b):
        results = []
        for page, (_, truth), name in ((page_a, cameras[0], "a"), (page_b, cameras[1], "b")):
            got = wait_for(page, lambda r: all(v["windows"] >= 12 for v in r.values()), 300, "12 windows")
            source_fps = page.evaluate("() => parseFloat(document.querySelector('#edgevid-stats').dataset.sourceFps)")
            page.screenshot(path=SCREENSHOTS / f"demo-session-{name}.png", full_page=True)
            results.append((got, truth, source_fps))
    # A session whose frames reached the server slower than the model samples (5 fps) shows motion
    # faster than trained: its label says nothing about the pipeline, so only the others are judged.
    judged = [(got, truth) for got, truth, source_fps in results if source_fps >= 4.5]
    if not judged:
        pytest.skip(f"frames reached the server at {', '.join(f'{r[2]:.1f}' for r in results)} fps, below the 5 fps the"
                    " model samples at: the machine is too loaded for either stream to show the trained motion")
    for got, truth in judged:
        assert {row["top1"] for row in got.values()} == {truth}, got


@needs_browser
def test_browser_plays_a_synthmotion_sample(server, artifacts):
    """The camera-less source: a generated SynthMotion clip played at its frame rate."""
    from playwright.sync_api import sync_playwright

    url = server.url
    seed = LOOPING_SEEDS[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.get_by_role("tab", name="Video file / SynthMotion sample").click()
            page.get_by_label("SynthMotion seed (class = seed % 8)").fill(str(seed))
            page.locator("#play").click()
            page.wait_for_selector("#edgevid-stats .truth")
            got = wait_for(page, lambda r: all(v["sampled"] == "11/32" and v["windows"] >= 1 for v in r.values()), 120,
                           "the end of the 32-frame clip")
            truth = page.locator("#edgevid-stats .truth").inner_text()
            page.screenshot(path=SCREENSHOTS / "demo-sample.png", full_page=True)
        finally:
            browser.close()
    assert truth == load_demo_labels()[seed % 8]
    for row in got.values():
        assert row["model"] > 0 and row["e2e"] > 0 and row["sampled"] == "11/32"  # every 3rd of 32 frames at 15 fps
        if REFERENCE.is_file():
            assert row["top1"] == truth


def table_fits(page) -> dict:
    """Bounds of the stats tables against the viewport and their container: nothing clipped or
    hidden behind a scroll bar (element bounds, not pixels)."""
    return page.evaluate("""() => {
        const box = document.querySelector('#edgevid-stats').getBoundingClientRect();
        const out = {viewport: window.innerWidth, container: [box.left, box.right], tables: []};
        for (const table of document.querySelectorAll('#edgevid-stats table')) {
            const r = table.getBoundingClientRect(), wrap = table.parentElement;
            out.tables.push({cls: table.className, left: r.left, right: r.right, width: r.width, height: r.height,
                             scroll: wrap.scrollWidth, client: wrap.clientWidth, rows: table.rows.length});
        }
        return out;}""")


def assert_table_fits(page, width: int):
    page.locator("#edgevid-stats table.breakdown").scroll_into_view_if_needed()
    deadline = time.monotonic() + 15  # a loaded machine may take a while to lay out a resized page
    while True:
        fits = table_fits(page)
        left, right = fits["container"]
        if all(0 <= t["left"] and t["right"] <= min(fits["viewport"], right) + 1 and t["scroll"] <= t["client"] + 1
               for t in fits["tables"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(fits["tables"]) == 2, fits
    for table in fits["tables"]:
        assert table["rows"] >= 2 and table["height"] > 0, (width, table)
        assert 0 <= table["left"] and table["right"] <= min(fits["viewport"], right) + 1, (width, fits)
        assert left - 1 <= table["left"] and table["scroll"] <= table["client"] + 1, (width, fits)


def live_sessions(page) -> int:
    return int(page.evaluate("() => (document.querySelector('[data-live]') || {dataset: {live: '-1'}}).dataset.live"))


def play_file(page, upload: Path | None = None, seed: int | None = None):
    page.get_by_role("tab", name="Video file / SynthMotion sample").click()
    if upload is not None:
        page.locator("#video input[type=file]").set_input_files(str(upload))
        page.wait_for_selector("#video video")
        page.locator("#use-sample input").check()  # ticked again: the upload must still win
    if seed is not None:
        page.locator("#seed input").fill(str(seed))
    page.locator("#play").click()


@needs_browser
def test_browser_upload_wins_sessions_are_isolated_released_and_the_table_fits(server, artifacts, tmp_path):
    """One browser, two contexts: A (1280 px) uploads a file with the sample box ticked, B (820 px)
    plays a sample; each shows its own source; the whole stats table is visible at 1280, 820 and
    390 px; closing B releases its session on the server; a broken upload is a toast naming the
    file, with no traceback in the server log."""
    from playwright.sync_api import sync_playwright

    from edgevid.data.synthmotion import CLASSES, FPS, generate_clip
    from edgevid.data.video import write_video

    upload_seed, sample_seed = LOOPING_SEEDS[1], LOOPING_SEEDS[0]
    upload = write_video(tmp_path / "my upload.mp4", generate_clip(upload_seed)[0], FPS)
    broken = tmp_path / "broken clip.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing a decoder could read" * 40)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    log_before = server.log.read_text()
    done = lambda r: len(r) == 2 and all(v["sampled"] == "11/32" and v["windows"] >= 1 for v in r.values())  # noqa: E731
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            a = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            b = browser.new_context(viewport={"width": 820, "height": 900}).new_page()
            for page in (a, b):
                page.set_default_timeout(180_000)
                page.goto(server.url)
                hint = page.locator("#edgevid-stats .hint").inner_text()
                assert "Pick one" not in hint and "Ready" in hint  # two artifacts are ticked
            a.get_by_role("tab", name="Video file / SynthMotion sample").click()
            a.locator("#use-sample input").uncheck()
            a.locator("#play").click()  # no upload, no sample: Play says so
            a.get_by_test_id("toast-body").filter(has_text="Nothing to play").first.wait_for(timeout=60_000)
            play_file(a, upload=upload)
            play_file(b, seed=sample_seed)
            got_a = wait_for(a, done, 180, "the end of the uploaded 32-frame file")
            got_b = wait_for(b, done, 180, "the end of the 32-frame sample")
            source_a = a.locator("#edgevid-stats .source").inner_text()
            assert a.locator("#edgevid-stats .truth").count() == 0 and "my upload.mp4" in source_a, source_a
            assert b.locator("#edgevid-stats .truth").inner_text() == CLASSES[sample_seed % 8]
            if REFERENCE.is_file():  # each page labels its own clip
                assert {v["top1"] for v in got_a.values()} == {CLASSES[upload_seed % 8]}, got_a
                assert {v["top1"] for v in got_b.values()} == {CLASSES[sample_seed % 8]}, got_b
            for page, width in ((a, 1280), (b, 820)):
                assert_table_fits(page, width)
                page.screenshot(path=SCREENSHOTS / f"demo-table-{width}.png", full_page=True)
            b.set_viewport_size({"width": 390, "height": 844})
            assert_table_fits(b, 390)
            b.screenshot(path=SCREENSHOTS / "demo-table-390.png", full_page=True)
            deadline = time.monotonic() + 60
            while live_sessions(a) != 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert live_sessions(a) == 2
            b.context.close()  # the tab goes away mid-session: its Session must be released
            deadline = time.monotonic() + 60
            while live_sessions(a) != 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert live_sessions(a) == 1, "the closed context's session was not released within 60 s"
            clear = a.locator("#video button[aria-label='Clear']")
            if clear.count():
                clear.first.click()
            a.locator("#video input[type=file]").set_input_files(str(broken))
            a.locator("#play").click()
            toast = a.get_by_test_id("toast-body").filter(has_text="broken clip.mp4").first
            toast.wait_for(timeout=60_000)
            text = toast.inner_text()
            assert "broken clip.mp4" in text and "/tmp" not in text and str(tmp_path) not in text, text
        finally:
            browser.close()
    new_log = server.log.read_text()[len(log_before):]
    assert "Traceback" not in new_log, new_log[-3000:]
