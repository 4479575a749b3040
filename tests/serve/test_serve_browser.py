"""The web page in a real browser: Debian's chromium driven by Playwright against a `tddfa serve`
process on a free loopback port. Uploads trump_hillary.jpg, waits for two faces, checks that
both 3-D viewers drew a mesh (pixels read back from the WebGL canvases) and that orbiting changes
the view, that nothing is fetched from another origin, and saves docs/images/serve.png."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TDDFA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "images" / "serve.png"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync",
        # WebGL through SwiftShader (software) without a GPU; newer builds want it said explicitly
        "--enable-unsafe-swiftshader"]

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is absent: pip install 'tddfa[browser-test]'")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"no chromium browser at {CHROMIUM}: apt-get install chromium (or set TDDFA_CHROMIUM)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(shared):
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "tddfa", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"tddfa serve did not start: {proc.stderr.read()[-2000:]}")
        time.sleep(0.5)
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


_NON_BLANK = """(sel) => Array.from(document.querySelectorAll(sel)).map((gl) => {
  const c = document.createElement('canvas');
  c.width = gl.width; c.height = gl.height;
  const ctx = c.getContext('2d');
  ctx.drawImage(gl, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let lit = 0;                        // pixels far from the viewer's background #20242c
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - 0x20) + Math.abs(d[i + 1] - 0x24) + Math.abs(d[i + 2] - 0x2c) > 60) lit++;
  }
  return { fraction: lit / (d.length / 4), url: gl.toDataURL() };
})"""


def test_page_upload_two_faces_and_3d_viewers(server, shared):
    photo = shared / "samples" / "trump_hillary.jpg"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            foreign: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: None if r.url.startswith((server, "blob:", "data:"))
                    else foreign.append(r.url))
            page.goto(server + "/")
            page.set_input_files("#file", str(photo))
            # CSS waits: the page's CSP forbids the eval() behind string predicates
            page.wait_for_selector("#status:not([data-faces=''])", timeout=240_000)
            status = page.locator("#status")
            assert status.get_attribute("data-faces") == "2", status.text_content()
            assert page.locator(".viewer[data-ready='1'] canvas").count() == 2
            page.wait_for_timeout(500)
            before = page.evaluate(_NON_BLANK, ".viewer canvas")
            for v in before:
                assert v["fraction"] > 0.05, f"3-D viewer looks blank: {v['fraction']:.3f} lit"
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            # orbit the first viewer: drag across it, the picture must change
            box = page.locator(".viewer canvas").first.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + box["width"] / 3, cy + 10, steps=8)
            page.mouse.up()
            page.wait_for_timeout(800)
            after = page.evaluate(_NON_BLANK, ".viewer canvas")
            assert after[0]["url"] != before[0]["url"], "dragging did not orbit the 3-D view"
            assert after[0]["fraction"] > 0.05
            # the photo canvas carries the photo at full size with the overlay
            assert page.evaluate("document.getElementById('photo').width") == 1536
            assert "2 faces" in status.text_content()
            # a server render kind replaces the overlay with the PNG from /v1/render
            page.click("#kinds button[data-kind='mesh']")
            page.wait_for_selector("#render:not([hidden])", timeout=120_000)
            assert page.evaluate("document.getElementById('render').naturalWidth") == 1536
            assert not errors, errors
            assert not foreign, f"requests left the server's origin: {foreign}"
        finally:
            browser.close()


def test_live_mode_with_a_fake_camera(server, shared, tmp_path):
    """Live mode: chromium's fake camera plays trump_hillary.jpg as an MJPEG stream; the page
    sends frames with increasing timestamps to /v1/live and draws the two tracked faces."""
    import cv2

    img = cv2.imread(str(shared / "samples" / "trump_hillary.jpg"))
    img = cv2.resize(img, (768, 344), interpolation=cv2.INTER_AREA)
    ok, jpg = cv2.imencode(".jpg", img)
    video = tmp_path / "camera.mjpeg"
    video.write_bytes(jpg.tobytes() * 3)
    args = ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                   f"--use-file-for-fake-video-capture={video}"]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            page.click("#live")
            # at least two frames answered, the last one with both faces tracked
            page.wait_for_selector("#status[data-live-faces='2']:not([data-live-frames='1'])",
                                   timeout=240_000)
            text = page.locator("#status").text_content()
            assert text.startswith("live: 2 faces"), text
            page.click("#live")
            assert page.locator("#live").text_content() == "Start live"
            assert not errors, errors
        finally:
            browser.close()


def test_api_docs_render_offline(server):
    """/docs (Swagger UI, served from the package, not a CDN) lists every endpoint."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            foreign: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:"))
                    else foreign.append(r.url))
            page.goto(server + "/docs")
            page.wait_for_selector(".opblock", timeout=120_000)
            paths = page.locator(".opblock-summary-path").all_text_contents()
            for path in ("/v1/align", "/v1/render", "/v1/export", "/v1/live", "/v1/models",
                         "/healthz", "/metrics"):
                assert any(path in t for t in paths), (path, paths)
            assert not foreign, foreign
        finally:
            browser.close()
