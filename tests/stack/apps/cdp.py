"""A headless Chromium driven over the DevTools protocol: real clicks and key presses for page tests.

``Browser`` starts Chromium with a remote-debugging port and talks to its page target over a
WebSocket (aiohttp): ``goto``, ``js`` (evaluate, JSON result), ``wait_for`` (poll an expression),
``click`` (mouse press and release at an element's centre, as a person's click) and ``key``
(keyDown/keyUp with the character, as typing does). Nothing but Chromium and aiohttp is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from driftline.apps.testing.harness import free_ports

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-extensions",
         "--window-size=1200,900"]  # fmt: skip


def chromium() -> str:
    """The Chromium executable (setup installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("headless Chromium is needed for browser tests: apt-get install -y chromium")


class Browser:
    """One Chromium process and a DevTools session on its first page."""

    def __init__(self, profile: Path) -> None:
        self.port = free_ports(1)[0]
        self.proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={self.port}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: Any = None

    def _page_ws_url(self, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium's DevTools endpoint did not come up")
            time.sleep(0.2)

    async def __aenter__(self) -> Browser:
        url = await asyncio.to_thread(self._page_ws_url)
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events in between are ignored)."""
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self._ws.receive_json(), timeout=60)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def goto(self, url: str) -> None:
        """Open ``url`` in the page."""
        await self.send("Page.navigate", url=url)

    async def js(self, expression: str) -> Any:
        """The JSON value of ``expression`` evaluated in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30) -> Any:
        """Poll ``expression`` until it is truthy; its value (``TimeoutError`` past ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = await self.js(expression)
            except RuntimeError:
                value = None  # the page is still loading
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} stayed falsy for {timeout_s}s")
            await asyncio.sleep(0.2)

    async def click(self, selector: str) -> None:
        """A left click at the centre of the first element matching ``selector``."""
        box = await self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if box is None:
            raise LookupError(f"nothing matches {selector!r}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    async def key(self, char: str) -> None:
        """Press and release the key that types ``char``."""
        await self.send("Input.dispatchKeyEvent", type="keyDown", key=char, text=char)
        await self.send("Input.dispatchKeyEvent", type="keyUp", key=char)

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` into it."""
        await self.click(selector)
        await self.send("Input.insertText", text=text)
