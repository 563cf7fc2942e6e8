"""Headless chromium driven over the Chrome DevTools Protocol with aiohttp's websocket client.

No WebDriver and no new dependency: one websocket to the browser, one isolated browser context
per page (its own cookies), real mouse clicks and typed text (Input.*), screenshots and
downloads as Chrome does them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

# Flags that work in a container on a closed network: without the background-networking ones,
# chromium keeps dialling Google's services and its connections are refused.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
)
PHONE = (390, 844)  # CSS pixels of a common phone (iPhone 12-15)
DESKTOP = (1280, 900)


def find_chromium() -> str | None:
    """Debian's chromium (KTP_CHROMIUM overrides)."""
    for name in (os.environ.get("KTP_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _spawn(exe: str, profile: Path, log: Path) -> subprocess.Popen[bytes]:
    profile.mkdir(parents=True, exist_ok=True)
    args = [exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0"]
    with open(log, "wb") as out:
        return subprocess.Popen([*args, "about:blank"], stdout=out, stderr=out)


def _devtools_address(profile: Path) -> tuple[str, str] | None:
    """(port, browser path) from the DevToolsActivePort file chromium writes once it listens."""
    try:
        lines = (profile / "DevToolsActivePort").read_text().split("\n")
    except FileNotFoundError:
        return None
    return (lines[0], lines[1]) if len(lines) >= 2 and lines[1] else None


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _write(path: Path, data: bytes) -> None:
    _mkdir(path.parent)
    path.write_bytes(data)


class CdpError(RuntimeError):
    """A DevTools command failed, or the page did not do what was waited for."""


class Browser:
    """One chromium process and its browser-level DevTools connection."""

    def __init__(self, proc: subprocess.Popen[bytes], http: aiohttp.ClientSession, ws: Any) -> None:
        self.proc = proc
        self._http = http
        self._ws = ws
        self._ids = iter(range(1, 1 << 30))
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    @classmethod
    async def launch(cls, exe: str, profile: Path, log: Path, timeout: float = 30) -> Browser:
        """Start chromium on a fresh profile with a DevTools port chosen by chromium itself."""
        proc = _spawn(exe, profile, log)
        deadline = time.monotonic() + timeout
        while (found := _devtools_address(profile)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=10)
                raise CdpError(f"chromium did not start:\n{_tail(log)}")
            await asyncio.sleep(0.05)
        port, path = found
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        return cls(proc, http, ws)

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            else:
                for listener in list(self._listeners):
                    listener(data)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(CdpError("the DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """One command; its result, or CdpError with chromium's message."""
        cid = next(self._ids)
        msg: dict[str, Any] = {"id": cid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        await self._ws.send_str(json.dumps(msg))
        data = await asyncio.wait_for(fut, 30)
        if "error" in data:
            raise CdpError(f"{method}: {data['error'].get('message')}")
        return dict(data.get("result", {}))

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    async def new_page(
        self, size: tuple[int, int] = PHONE, *, mobile: bool = True, downloads: Path | None = None
    ) -> Page:
        """A tab in a new, empty browser context (no cookies shared with other pages)."""
        ctx = (await self.send("Target.createBrowserContext"))["browserContextId"]
        target = (
            await self.send("Target.createTarget", {"url": "about:blank", "browserContextId": ctx})
        )["targetId"]
        session = (await self.send("Target.attachToTarget", {"targetId": target, "flatten": True}))[
            "sessionId"
        ]
        page = Page(self, session, ctx)
        self.listen(page.on_event)
        if downloads is not None:
            _mkdir(downloads)
            await self.send(
                "Browser.setDownloadBehavior",
                {
                    "behavior": "allow",
                    "browserContextId": ctx,
                    "downloadPath": str(downloads),
                    "eventsEnabled": True,
                },
            )
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            await page.send(method)
        await page.resize(size, mobile=mobile)
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._http.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Page:
    """A tab: navigate, read, click, type, screenshot; the HTTP status of each document."""

    def __init__(self, browser: Browser, session: str, context: str) -> None:
        self.browser = browser
        self.session = session
        self.context = context
        self.status: int | None = None  # of the last document loaded
        self.downloads: list[dict[str, Any]] = []
        self.console_errors: list[str] = []

    def on_event(self, data: dict[str, Any]) -> None:
        method, params = data.get("method"), data.get("params", {})
        if method == "Browser.downloadProgress" and params.get("state") == "completed":
            self.downloads.append(params)
        if data.get("sessionId") != self.session:
            return
        if method == "Network.responseReceived" and params.get("type") == "Document":
            self.status = int(params["response"]["status"])
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def resize(self, size: tuple[int, int], *, mobile: bool) -> None:
        width, height = size
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def _mark(self) -> None:
        await self.eval("window.__ktpOld = true")

    async def _until_new_document(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(CdpError):  # the old context is gone mid-navigation
                if await self.eval("!window.__ktpOld && document.readyState === 'complete'"):
                    return
            await asyncio.sleep(0.05)
        raise CdpError(f"no new page loaded within {timeout} s (at {await self.url()})")

    async def goto(self, url: str) -> int | None:
        """Load `url`; the HTTP status of the document."""
        await self._mark()
        self.status = None
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"{url}: {result['errorText']}")
        await self._until_new_document()
        return self.status

    async def url(self) -> str:
        return str(await self.eval("location.href"))

    async def path(self) -> str:
        return str(await self.eval("location.pathname"))

    async def text(self, selector: str = "body") -> str:
        """The visible text of the first element matching `selector` ('' if none)."""
        value = await self.eval(
            f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText"
        )
        return str(value)

    async def exists(self, selector: str) -> bool:
        return bool(await self.eval(f"!!document.querySelector({json.dumps(selector)})"))

    async def count(self, selector: str) -> int:
        return int(await self.eval(f"document.querySelectorAll({json.dumps(selector)}).length"))

    async def _center(self, selector: str) -> tuple[float, float]:
        box = await self.eval(
            f"""(() => {{
              const el = document.querySelector({json.dumps(selector)});
              if (!el) return null;
              el.scrollIntoView({{block: 'center', inline: 'nearest'}});
              const r = el.getBoundingClientRect();
              return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height];
            }})()"""
        )
        if box is None:
            raise CdpError(f"no element {selector} on {await self.url()}")
        x, y, w, h = box
        if w == 0 or h == 0:
            raise CdpError(f"{selector} is not visible on {await self.url()}")
        hit = await self.eval(
            f"(() => {{ const el = document.elementFromPoint({x}, {y}); "
            f"const t = document.querySelector({json.dumps(selector)}); "
            "return !!el && (el === t || t.contains(el)); })()"
        )
        if not hit:
            raise CdpError(f"{selector} is covered by another element on {await self.url()}")
        return float(x), float(y)

    async def click(self, selector: str) -> None:
        """A real left click in the middle of the element (which must be visible, uncovered)."""
        x, y = await self._center(selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params: dict[str, Any] = {"type": kind, "x": x, "y": y}
            if kind != "mouseMoved":
                params.update(button="left", clickCount=1)
            await self.send("Input.dispatchMouseEvent", params)

    async def click_and_wait(self, selector: str) -> int | None:
        """Click (a link or a form's button) and wait for the next page; its HTTP status."""
        await self._mark()
        self.status = None
        await self.click(selector)
        await self._until_new_document()
        return self.status

    async def type(self, selector: str, text: str) -> None:
        """Click into a field and type `text` as an input method commits it (Chinese too)."""
        await self.click(selector)
        await self.send("Input.insertText", {"text": text})

    async def value(self, selector: str) -> str:
        return str(await self.eval(f"document.querySelector({json.dumps(selector)}).value"))

    async def page_width(self) -> int:
        """The document's scroll width: wider than the viewport means sideways scrolling."""
        return int(await self.eval("document.documentElement.scrollWidth"))

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the viewport)."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": max(1, int(size["width"])),
            "height": max(1, min(int(size["height"]), 8000)),
            "scale": 1,
        }
        shot = await self.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        _write(path, base64.b64decode(shot["data"]))
        return path

    async def wait_download(self, timeout: float = 15) -> dict[str, Any]:
        """The next completed download of this page's browser context."""
        deadline = time.monotonic() + timeout
        while not self.downloads:
            if time.monotonic() > deadline:
                raise CdpError(f"no download completed within {timeout} s")
            await asyncio.sleep(0.05)
        return self.downloads.pop(0)

    async def cookies(self) -> list[dict[str, Any]]:
        """This context's cookies (HttpOnly ones too)."""
        result = await self.browser.send("Storage.getCookies", {"browserContextId": self.context})
        return list(result.get("cookies", []))
