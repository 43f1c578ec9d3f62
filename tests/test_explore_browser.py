"""mirage explore in a real browser: headless Chromium (Debian's ``chromium``, installed by
``.ci/run``) driven by Playwright. Starts ``mirage explore examples/room.png`` on a free port, waits
for the 3D view, presses W twice, waits for two chunks, presses U, then checks the run directory,
the viewport screenshot, the console and that ``mirage generate --traj DIR/trajectory.json``
replays the remaining chunk bit for bit. Also checks that the page loads nothing from outside
127.0.0.1 (viser's client is served from the installed package: no CDN)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOT = ROOT / "docs" / "assets" / "explore.png"  # the docs' screenshot, refreshed by this test with MIRAGE_UPDATE_SCREENSHOT=1


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


pytest.importorskip("playwright", reason="playwright not installed (the dev extra has it)")
pytest.importorskip("viser", reason="viser not installed (pip install -e '.[explore]')")
pytestmark = pytest.mark.skipif(chromium() is None and not os.environ.get("MIRAGE_REQUIRE_BROWSER"),
                                reason="no Chromium found (.ci/run installs Debian's chromium with apt-get)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chunks_in(out: Path) -> int:
    try:
        return len(json.loads((out / "run.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError):
        return -1


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_explore_in_a_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    out, port = tmp_path / "walk", free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mirage_cli", "--threads", "1", "explore", str(ROOT / "examples" / "room.png"),
           "--width", "256", "--out", str(out), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        for line in server.stdout:  # the URL is printed once the session and the server are up
            if "open http://" in line:
                break
        assert f"http://127.0.0.1:{port}" in line, line
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--use-gl=swiftshader",
                                                                          "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            requests, errors = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}")
            page.wait_for_selector("canvas[data-engine]", timeout=60_000)
            page.get_by_text("known fraction of the current view").wait_for(timeout=60_000)
            page.mouse.click(500, 650)  # focus the viewport (not a text box) so keys reach the hotkeys
            page.keyboard.press("w")
            wait_for(lambda: chunks_in(out) == 1, 60, "the first chunk")
            page.keyboard.press("w")
            wait_for(lambda: chunks_in(out) == 2, 60, "the second chunk")
            page.get_by_text("· 2 chunk(s) ·").wait_for(timeout=30_000)
            page.keyboard.press("u")
            wait_for(lambda: chunks_in(out) == 1, 60, "the undo")
            page.get_by_text("· 1 chunk(s) ·").wait_for(timeout=30_000)
            time.sleep(1.0)  # the point cloud and frustums are drawn
            shot = tmp_path / "explore.png"
            page.screenshot(path=str(shot))
            browser.close()
        from PIL import Image

        img = np.asarray(Image.open(shot).convert("RGB")).astype(np.float32)
        viewport = img[150:700, 300:900]  # the 3D view (the GUI panel is on the right)
        assert viewport.std() > 20, "the viewport screenshot is blank"
        assert not errors, errors
        outside = [u for u in requests if not u.startswith((f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", "blob:",
                                                             "data:"))]
        assert not outside, f"the page loaded from outside the server: {outside}"
        if os.environ.get("MIRAGE_UPDATE_SCREENSHOT"):
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, SHOT)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode == 0
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["chunk_000.latents.safetensors", "chunk_000.mp4"]
    assert chunks_in(out) == 1 and json.loads((out / "run.json").read_text())["status"] == "done"
    replay = tmp_path / "replay"
    subprocess.run([sys.executable, "-m", "mirage_cli", "--threads", "1", "generate", str(ROOT / "examples" / "room.png"),
                    "--traj", str(out / "trajectory.json"), "--width", "256", "--out", str(replay), "--keep-latents", "-q"],
                   env=env, check=True)
    import imageio.v3 as iio
    import torch

    from mirage_cli.pipeline.rundir import chunk_latents, load_latents

    assert torch.equal(load_latents(chunk_latents(out, 0)), load_latents(chunk_latents(replay, 0)))
    assert np.array_equal(iio.imread(out / "video.mp4"), iio.imread(replay / "video.mp4"))
