"""A minimal W3C WebDriver client (urllib only) for headless Chromium through chromedriver.

Used by the slow browser tests: ``with Browser(tmp_path) as b: b.open(uri); b.script("return 1")``.
Both processes are ended when the block exits.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROME_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network, even if asked
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def chromedriver() -> str | None:
    found = shutil.which("chromedriver")
    if found:
        return found
    return "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One headless Chromium session, driven over chromedriver's HTTP API."""

    def __init__(self, workdir: Path, width: int = 1200, height: int = 1400):
        self.workdir = Path(workdir)
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.session: str | None = None

    # ------------------------------------------------------------ plumbing
    def _call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                payload = json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            payload = json.loads(e.read() or b"{}")
            raise WebDriverError(f"{method} {path}: {payload.get('value', payload)}") from None
        return payload.get("value")

    def __enter__(self) -> "Browser":
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        with open(self.workdir / "chromedriver.log", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [chromedriver(), f"--port={port}"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(home)},
            )
        deadline = time.time() + 30
        while True:
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, WebDriverError):
                pass
            if time.time() > deadline:
                self.__exit__(None, None, None)
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        args = CHROME_ARGS + [f"--user-data-dir={self.workdir / 'profile'}", f"--window-size={self.size[0]},{self.size[1]}"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": chromium(), "args": args},
        }}}
        try:
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except Exception:
            self.__exit__(None, None, None)
            raise
        self._call("POST", f"/session/{self.session}/timeouts", {"script": 120_000, "pageLoad": 120_000})
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.session:
                self._call("DELETE", f"/session/{self.session}", timeout=30)
        except (OSError, WebDriverError):
            pass
        finally:
            self.session = None
            if self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                self.proc = None

    # ------------------------------------------------------------ what tests use
    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, code: str, *args: Any) -> Any:
        """Run ``code`` (a function body; ``arguments`` holds args) and return its value."""
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": code, "args": list(args)})

    def async_script(self, code: str, *args: Any) -> Any:
        """Run ``code``; it must call ``arguments[arguments.length - 1](value)`` to finish."""
        return self._call("POST", f"/session/{self.session}/execute/async", {"script": code, "args": list(args)})

    def element(self, css: str) -> str:
        return self._call("POST", f"/session/{self.session}/element", {"using": "css selector", "value": css})[ELEMENT]

    def screenshot(self, css: str | None = None) -> bytes:
        if css is None:
            data = self._call("GET", f"/session/{self.session}/screenshot")
        else:
            data = self._call("GET", f"/session/{self.session}/element/{self.element(css)}/screenshot")
        return base64.b64decode(data)

    def pointer(self, css: str, moves: list[tuple[str, int, int]]) -> None:
        """Pointer actions on an element: ("move", x, y) relative to its center, ("down", 0, 0), ("up", 0, 0)."""
        el = self.element(css)
        actions = []
        for kind, x, y in moves:
            if kind == "move":
                actions.append({"type": "pointerMove", "duration": 50, "origin": {ELEMENT: el}, "x": x, "y": y})
            elif kind == "down":
                actions.append({"type": "pointerDown", "button": 0})
            elif kind == "up":
                actions.append({"type": "pointerUp", "button": 0})
            elif kind == "pause":
                actions.append({"type": "pause", "duration": x})
        body = {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]}
        self._call("POST", f"/session/{self.session}/actions", body)

    def log(self) -> list[dict[str, Any]]:
        try:
            return self._call("POST", f"/session/{self.session}/se/log", {"type": "browser"}) or []
        except WebDriverError:
            return []
