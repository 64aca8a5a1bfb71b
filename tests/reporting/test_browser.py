"""Open the report in headless Chromium: it renders (screenshot not blank), logs no errors, decodes
every image, runs no script and shows the HTML-laden prompt as text.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
separated by NUL bytes on file descriptors 3 and 4), which needs nothing but the standard library
and reports console messages with their level, uncaught exceptions, failed loads, CSP violations
and JavaScript dialogs (an ``alert(1)`` that got through would open one).

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped with that hint otherwise.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
TIMEOUT = 120.0  # seconds per protocol reply: generous, CI machines can be busy


class DevTools:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, exe: str, user_data_dir: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def _fds():  # in the child: chromium reads commands on fd 3 and writes replies on fd 4
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # dup2'd descriptors are inheritable; Python's own are not (PEP 446)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_fds,
            close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.time() + TIMEOUT
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.time() + TIMEOUT
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass


PAGE_CHECK = """JSON.stringify({
  images: document.images.length,
  broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length,
  scripts: document.scripts.length,
  text: document.body.innerText,
  height: document.documentElement.scrollHeight,
  verdict: Array.from(document.querySelectorAll("table.verdict")).flatMap(t => Array.from(t.tBodies[0].rows)
    .map(r => [t.previousElementSibling.innerText, ...Array.from(r.cells).map(c => c.innerText)])),
  figures: Array.from(document.querySelectorAll("#figures figure")).map(f => ({id: f.id, panels: +f.dataset.panels,
    empty: +f.dataset.emptyPanels, minPoints: +f.dataset.minPoints,
    shown: f.querySelector("img").getBoundingClientRect().width}))
})"""


def browse(html_path, user_data_dir, width: int = 1280, height: int = 2000) -> dict:
    """Load ``html_path``; return the screenshot (PNG bytes), page facts and the problems logged."""
    tools = DevTools(CHROMIUM, str(user_data_dir))
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            tools.send(f"{domain}.enable", session=session)
        tools.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        tools.send("Page.navigate", {"url": html_path.resolve().as_uri()}, session)
        tools.wait_for("Page.loadEventFired")
        facts = json.loads(
            tools.send("Runtime.evaluate", {"expression": PAGE_CHECK, "returnByValue": True}, session)["result"][
                "value"
            ]
        )
        png = base64.b64decode(tools.send("Page.captureScreenshot", {"format": "png"}, session)["data"])
        problems = []
        for e in tools.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                problems.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif method == "Runtime.exceptionThrown":
                problems.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                problems.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Page.javascriptDialogOpening":
                problems.append(f"dialog opened: {p.get('message')}")
        return {"png": png, "facts": facts, "problems": problems}
    finally:
        tools.close()


@pytest.fixture(scope="module")
def rendered(study_report, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: apt-get update && apt-get install -y chromium)")
    result = browse(study_report.html, tmp_path_factory.mktemp("chromium-profile"))
    (study_report.out_dir / "screenshot.png").write_bytes(result["png"])  # for a human look
    return result


def test_page_logs_no_errors(rendered):
    assert rendered["problems"] == []


def test_screenshot_is_not_blank(rendered):
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(rendered["png"])).convert("L"), dtype=float)
    assert image.shape == (2000, 1280)
    non_white = (image < 245).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the page is not white"
    assert image.std() > 20


def test_every_image_decodes_and_no_script_runs(rendered):
    facts = rendered["facts"]
    assert facts["images"] == 4 + 3 and facts["broken"] == 0  # curve figures + a samples figure per cell
    assert facts["scripts"] == 0
    assert "<script>alert(1)</script>" in facts["text"]  # shown to the reader as text
    assert facts["height"] > 2000


def test_rendered_verdict_lists_every_cell_and_arm(rendered):
    rows = rendered["facts"]["verdict"]
    cells = [
        "DDPO · aesthetic on single objects",
        "DDPO · alignment on compositions",
        "AlignProp · aesthetic on single objects",
    ]
    assert [(r[0], r[1]) for r in rows] == [
        (c, s) for c in cells for s in ("Baseline", "CFG only", "Phrase only", "DiffExp")
    ]
    assert all(r[-1] for r in rows)  # every row has its sentence
    assert sum("no comparison is possible" in r[-1] for r in rows) == 3  # DDPO x alignment's arms


def test_rendered_figures_have_no_empty_panel_and_six_point_curves(rendered):
    figures = {f["id"]: f for f in rendered["facts"]["figures"]}
    assert set(figures) == {
        "figure-heldout_reward",
        "figure-ground_truth",
        "figure-diversity",
        "figure-training_reward",
    }
    for f in figures.values():
        assert f["panels"] >= 3 and f["empty"] == 0 and f["minPoints"] >= 2 and f["shown"] > 300, f
    assert figures["figure-heldout_reward"]["panels"] == 3 and figures["figure-heldout_reward"]["minPoints"] >= 6


def test_rendered_page_names_no_machine_path(rendered):
    import re

    text = rendered["facts"]["text"]
    assert not re.search(r"(?<![\w.+\->~])/(?:tmp|home|root|work|Users|var|private|mnt|opt|srv)/", text)
    assert "store: sqlite:///<study>/mlflow.db" in text


COMMITTED = Path(__file__).resolve().parents[2] / "reports" / "embedded" / "index.html"


@pytest.fixture(scope="module")
def rendered_committed(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: apt-get update && apt-get install -y chromium)")
    if not COMMITTED.is_file():
        pytest.skip("no committed report")
    return browse(COMMITTED, tmp_path_factory.mktemp("chromium-committed"))


def test_committed_report_renders_the_papers_grid(rendered_committed):
    facts = rendered_committed["facts"]
    assert rendered_committed["problems"] == [] and facts["broken"] == 0 and facts["scripts"] == 0
    cells = {(r[0], r[1]) for r in facts["verdict"]}
    algorithms, tasks = ("DDPO", "AlignProp"), ("aesthetic on single objects", "alignment on compositions")
    assert cells == {
        (f"{a} · {t}", s) for a in algorithms for t in tasks for s in ("Baseline", "CFG only", "Phrase only", "DiffExp")
    }
    figures = {f["id"]: f for f in facts["figures"]}
    assert figures["figure-heldout_reward"]["panels"] == 4 and figures["figure-heldout_reward"]["minPoints"] >= 6
    assert all(f["empty"] == 0 and f["minPoints"] >= 2 for f in figures.values())
    import re

    assert not re.search(r"(?<![\w.+\->~])/(?:tmp|home|root|work|Users|var|private|mnt|opt|srv)/", facts["text"])
