"""A real headless browser for tests: Debian's Chromium, driven over the
Chrome DevTools protocol (JSON messages on a websocket).

Tests load pages the way an operator's browser does and query the DOM the
browser built (not the HTML text), so what they check is what a person
sees.  Chromium runs with a fresh profile and with every background
service off: this machine's network is closed, and a browser phoning home
would only slow the test down.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import websocket

from nodepool.tests.helpers import wait_for

CHROMIUM = os.environ.get("NODEPOOL_CHROMIUM", "/usr/bin/chromium")

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
)


class BrowserError(RuntimeError):
    """The browser answered a command with an error, or a script threw."""


def chromium_available() -> bool:
    return os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM) is not None


class HeadlessChromium:
    """One Chromium process with one page; use as a context manager."""

    def __init__(self, profile_dir: Path, width: int = 1280, height: int = 900,
                 timeout: float = 60.0) -> None:
        self.profile_dir = Path(profile_dir)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._log = open(self.profile_dir / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile_dir}",
             "--remote-debugging-port=0", f"--window-size={width},{height}",
             "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.ws: websocket.WebSocket | None = None
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    # Connection ------------------------------------------------------------

    def _connect(self) -> None:
        port_file = self.profile_dir / "DevToolsActivePort"

        def port() -> int | None:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}; see "
                                   f"{self.profile_dir / 'chromium.log'}")
            try:
                first = port_file.read_text().splitlines()[0]
            except (OSError, IndexError):
                return None
            return int(first) if first.isdigit() else None

        devtools = wait_for(port, self.timeout, what="chromium's DevTools port")
        with urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list",
                                    timeout=self.timeout) as answer:
            targets = json.loads(answer.read())
        page = next(t for t in targets if t.get("type") == "page")
        # No Origin header: Chromium only accepts DevTools clients whose
        # origin it was told to allow, and a test client has none.
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"],
                                              timeout=self.timeout, suppress_origin=True)

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # Protocol --------------------------------------------------------------

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; returns its result (events that arrive
        meanwhile are dropped: nothing here subscribes to any)."""
        assert self.ws is not None, "browser is closed"
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") != message_id:
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    # Pages ------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url`` and wait until the document and everything it
        loads are done."""
        answer = self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise BrowserError(f"could not load {url}: {answer['errorText']}")

        def loaded() -> bool:
            try:
                return self.evaluate(
                    f"document.readyState === 'complete' && location.href === {json.dumps(url)}"
                ) is True
            except BrowserError:
                return False  # between documents

        wait_for(loaded, self.timeout, what=f"{url} loaded in chromium")

    def emulate(self, width: int, height: int, mobile: bool = False,
                scale: float = 1.0) -> None:
        """Give the page a device's viewport (a phone: ``mobile=True``)."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=scale, mobile=mobile)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (all of it, not just the viewport)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.evaluate("[document.documentElement.scrollWidth, "
                                 "document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1],
                              "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path
