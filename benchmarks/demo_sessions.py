"""Demo server under real use: memory and threads over open/stream/close cycles, and the demo's
model-only FPS against `edgevid bench` at the same threads.

    python benchmarks/demo_sessions.py [ARTIFACT ...] [--cycles 20] [--bench-seconds 3] [--json FILE]

Starts ``edgevid demo ARTIFACT ...`` (threads per runner chosen by the demo from the cores and the
two ticked targets), then drives Debian's Chromium (Playwright):

1. *cycles*: a fresh browser context opens the page, plays a SynthMotion sample (a new seed each
   time: 32 frames at 15 fps through both targets) to its end and closes. The server process's
   RSS and thread count (``/proc/PID``) are read when idle before the first cycle, after the
   first cycle's session is released and after the last one's. The issue asks: RSS after 20
   cycles within 50 MB of RSS after the first, threads back to the idle count.
2. *agreement*: ``edgevid bench ARTIFACT --threads T`` (T = the demo's threads per runner) writes
   each artifact's report, then one context plays a 30 s file through both targets and reads the
   stats table's model-only FPS (the runner timed alone in the server with bench's own code), bench
   FPS and their ratio (the issue asks within 10 %), and the in-stream inference FPS beside them.

Default artifacts: x3d_synth torch-cpu and OpenVINO INT8 under artifacts/demo (built when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def proc_figures(pid: int) -> dict:
    """RSS (MB) and OS threads of a process."""
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return {"rss_mb": round(rss, 1), "threads": len(os.listdir(f"/proc/{pid}/task"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_artifacts() -> list[Path]:
    from edgevid.bench import ensure_artifact
    from edgevid.models.weights import SHIPPED
    from edgevid.targets import get_target

    weights = None if (SHIPPED / "x3d_synth.pt").is_file() else "random"
    return [ensure_artifact("x3d_synth", get_target(t), p, REPO / "artifacts" / "demo", weights, None, None, False)[0]
            for t, p in (("torch-cpu", "fp32"), ("intel-cpu", "int8"))]


def start_server(artifacts: list[Path], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = f"import sys; from edgevid.cli import main; sys.argv = ['edgevid', 'demo', *{[str(a) for a in artifacts]!r}," \
           f" '--port', '{port}']; main()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"demo server did not start; see {log}")
            time.sleep(1)


def live_sessions(page) -> int:
    return int(page.evaluate("() => document.querySelector('#edgevid-server [data-live], [data-live]').dataset.live"))


def wait_live(probe, count: int, seconds: float = 90) -> float:
    started = time.monotonic()
    while live_sessions(probe) != count:
        if time.monotonic() - started > seconds:
            raise SystemExit(f"the server still has {live_sessions(probe)} live sessions after {seconds:.0f} s (expected {count})")
        time.sleep(0.25)
    return time.monotonic() - started


def table(page) -> dict:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#edgevid-stats table.main tr[data-artifact]')]
        .map(r => [r.dataset.artifact, {model: parseFloat(r.querySelector('.fps-model').dataset.value),
                   stream: parseFloat(r.querySelector('.fps-stream').dataset.value),
                   e2e: parseFloat(r.querySelector('.fps-e2e').dataset.value), windows: parseInt(r.querySelector('.windows').textContent),
                   sampled: r.querySelector('.sampled').textContent, bench: parseFloat(r.querySelector('.bench').dataset.bench),
                   bench_threads: r.querySelector('.bench').dataset.benchThreads, ratio: parseFloat(r.querySelector('.bench').dataset.ratio || 'NaN')}]))""")


def play(page, url: str, seed: int | None = None, upload: Path | None = None, until=None, seconds: float = 300,
         realtime: bool = True) -> dict:
    page.goto(url)
    page.get_by_role("tab", name="Video file / SynthMotion sample").click()
    if not realtime:
        page.locator("#realtime input").uncheck()
    if upload is not None:
        page.locator("#video input[type=file]").set_input_files(str(upload))
        page.wait_for_selector("#video video")
    if seed is not None:
        page.locator("#seed input").fill(str(seed))
    page.locator("#play").click()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = table(page)
        if got and until(got):
            return got
        time.sleep(0.5)
    raise SystemExit(f"stream did not finish in {seconds:.0f} s: {table(page)}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifacts", nargs="*", type=Path)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--bench-seconds", type=float, default=3.0)
    parser.add_argument("--no-agreement", action="store_true", help="skip edgevid bench and the agreement stream")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from edgevid.bench import usable_cores
    from edgevid.data.synthmotion import FPS, generate_clip
    from edgevid.data.video import write_video

    artifacts = args.artifacts or default_artifacts()
    threads = max(1, usable_cores() // len(artifacts))
    work = REPO / ".cache" / "demo-sessions"
    work.mkdir(parents=True, exist_ok=True)
    result = {"artifacts": [a.name for a in artifacts], "threads_per_runner": threads, "cycles": args.cycles}
    done32 = lambda r: len(r) == len(artifacts) and all(v["sampled"] == "11/32" and v["windows"] >= 1 for v in r.values())  # noqa: E731
    proc, url = start_server(artifacts, work / "server.log")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            probe = browser.new_page()  # never streams: no session of its own, reads the server line
            probe.goto(url)
            time.sleep(3)
            result["idle"] = proc_figures(proc.pid)
            marks = []
            for cycle in range(args.cycles):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.set_default_timeout(180_000)
                play(page, url, seed=1_000_000 + cycle, until=done32)
                context.close()
                release_s = wait_live(probe, 0)
                time.sleep(1.0)  # worker threads end after their last window
                figures = {**proc_figures(proc.pid), "cycle": cycle + 1, "released_after_s": round(release_s, 2)}
                marks.append(figures)
                print(f"cycle {cycle + 1}: released {release_s:.1f} s after the tab closed; RSS {figures['rss_mb']} MB,"
                      f" {figures['threads']} threads", flush=True)
            result["cycles_figures"] = marks
            time.sleep(15)  # idle worker threads of the server's thread pools retire after 10 s
            result["end"] = proc_figures(proc.pid)
            first, last = marks[0], marks[-1]
            result["rss_growth_mb"] = round(last["rss_mb"] - first["rss_mb"], 1)
            result["threads_back_to_idle"] = result["end"]["threads"] <= result["idle"]["threads"]
            if not args.no_agreement:
                for artifact in artifacts:
                    command = [sys.executable, "-m", "edgevid.cli", "bench", str(artifact), "--threads", str(threads),
                               "--seconds", str(args.bench_seconds), "--no-e2e"]
                    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
                frames = generate_clip(1_000_008)[0]
                long_file = write_video(work / "looped-30s.mp4", __import__("numpy").concatenate([frames] * 14), FPS)
                total = f"/{len(frames) * 14}"
                for realtime in (True, False):  # at the file's 15 fps (5 windows/s), and as fast as it decodes
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    page = context.new_page()
                    page.set_default_timeout(180_000)
                    got = play(page, url, upload=long_file, realtime=realtime, seconds=240,
                               until=lambda r: all(v["sampled"].endswith(total) and v["ratio"] == v["ratio"] for v in r.values()))
                    result["agreement" if realtime else "agreement_fast"] = got
                    context.close()
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"server idle: RSS {result['idle']['rss_mb']} MB, {result['idle']['threads']} threads;"
          f" after cycle 1: {first['rss_mb']} MB, {first['threads']} threads; after cycle {args.cycles}: {last['rss_mb']} MB,"
          f" {last['threads']} threads -> growth {result['rss_growth_mb']:+.1f} MB"
          f" ({'meets' if abs(result['rss_growth_mb']) <= 50 else 'misses'} <= 50 MB); 15 s later {result['end']['threads']}"
          f" threads: {'back to' if result['threads_back_to_idle'] else 'NOT back to'} the idle count")
    for key, how in (("agreement", "real time"), ("agreement_fast", "as fast as it decodes")):
        for name, row in result.get(key, {}).items():
            print(f"{how}, {name}: demo model-only {row['model']:.1f} FPS vs bench {row['bench']:.1f} FPS at"
                  f" {row['bench_threads']} threads -> {row['ratio']:.2f}x ({'within' if abs(row['ratio'] - 1) <= 0.1 else 'outside'}"
                  f" 10 %); in-stream inference {row['stream']:.1f} FPS (paced by the source); end-to-end {row['e2e']:.1f} FPS,"
                  f" {row['windows']} windows")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
