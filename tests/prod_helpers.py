"""Helpers for the production-mode tests: a cuttable TCP proxy in front of PostgreSQL, a client
that retries like WeChat, the stack's processes, and the record checks."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xmltodict
from sqlalchemy import select
from sqlalchemy.orm import aliased

from bot import db
from bot.models import Message, OutboxItem
from bot.settings import DEV_WECHAT_TOKEN as TOKEN
from bot.wechat import sign


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` drops every connection and refuses new ones
    until `restore()` (what a stopped database looks like to its clients)."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.cut_now = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.cut_now:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # idle pooled connections must live
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self.cut_now = True
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()

    def restore(self) -> None:
        """Accept connections again."""
        self.cut_now = False

    def close(self) -> None:
        """Stop the proxy."""
        self._closed = True
        self.cut()
        self._server.close()


@dataclass
class Sent:
    """One farmer message and what the farmer saw."""

    openid: str
    msg_id: int
    text: str
    reply: str | None  # None: all three tries failed ("该公众号暂时无法提供服务")
    tries: int
    sent_at: float = 0.0  # time.monotonic() of the first try


def wechat_post(base: str, token: str, openid: str, text: str, msg_id: int) -> Sent:
    """POST a text message as WeChat does: 5 s per try, 3 tries with the same MsgId."""
    body = xmltodict.unparse(
        {
            "xml": {
                "ToUserName": "gh_fault",
                "FromUserName": openid,
                "CreateTime": str(int(time.time())),
                "MsgType": "text",
                "Content": text,
                "MsgId": str(msg_id),
            }
        },
        full_document=False,
    ).encode()
    started = time.monotonic()
    for attempt in range(1, 4):
        ts, nonce = str(int(time.time())), secrets.token_hex(4)
        query = f"signature={sign(token, ts, nonce)}&timestamp={ts}&nonce={nonce}"
        req = urllib.request.Request(f"{base}/wechat?{query}", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read().decode()
            if raw == "success":
                return Sent(openid, msg_id, text, "", attempt, started)
            content = xmltodict.parse(raw)["xml"]["Content"]
            return Sent(openid, msg_id, text, content, attempt, started)
        except (urllib.error.URLError, OSError):
            continue
    return Sent(openid, msg_id, text, None, 3, started)


def get(url: str, timeout: float = 3) -> tuple[int, str]:
    """GET returning (status, body); 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def wait_until(check: object, timeout_s: float, every_s: float = 1.0) -> bool:
    """Poll `check()` until it is true or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(every_s)
    return False


def children_of(pid: int) -> dict[int, str]:
    """Every descendant process of `pid` with its command line (from /proc)."""
    parents: dict[int, int] = {}
    cmds: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        cmds[int(entry.name)] = cmd
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found[child] = cmds[child]
                todo.append(child)
    return found


def find_child(runner_pid: int, needle: str) -> int:
    """The pid of the runner's direct child whose command line contains `needle`."""
    for pid, cmd in sorted(children_of(runner_pid).items()):
        if needle in cmd and _ppid(pid) == runner_pid:
            return pid
    raise LookupError(needle)


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def kill9(pid: int) -> None:
    """kill -9."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


def outcome(db_url: str, sent: list[Sent]) -> dict[str, list[Any]]:
    """For each message: recorded? answered (passive answer, or a push sent)? `why` explains
    each unanswered one (its status and its pushes' statuses)."""
    engine = db.make_engine(db_url)
    push = aliased(Message)
    report: dict[str, list[Any]] = {"missing": [], "unanswered": [], "ok": [], "why": []}
    try:
        with db.make_sessionmaker(engine)() as session:
            for s in sent:
                msg = session.execute(
                    select(Message).where(Message.dedupe_key == str(s.msg_id))
                ).scalar_one_or_none()
                if msg is None:
                    report["missing"].append(s.msg_id)
                    continue
                pushed = session.execute(
                    select(OutboxItem.id)
                    .join(push, push.id == OutboxItem.message_id)
                    .where(push.reply_to_id == msg.id, OutboxItem.status == "sent")
                ).first()
                real = bool(s.reply) and not is_ack(s.reply or "")
                key = "ok" if real or pushed is not None else "unanswered"
                report[key].append(s.msg_id)
                if key == "unanswered":
                    pushes = session.execute(
                        select(OutboxItem.status, OutboxItem.error)
                        .join(push, push.id == OutboxItem.message_id)
                        .where(push.reply_to_id == msg.id)
                    ).all()
                    report["why"].append(
                        (s.msg_id, msg.status, msg.error, [tuple(p) for p in pushes])
                    )
    finally:
        engine.dispose()
    return report


def is_ack(reply: str) -> bool:
    """An acknowledgement or apology that promises an answer later."""
    from bot.replies import ACK_SLOW, APOLOGY
    from bot.resilience import ACK_SPOOLED

    return reply in {ACK_SLOW, APOLOGY, ACK_SPOOLED}


class FakeWeChatApi:
    """The WeChat API for several gateway processes at once (the in-gateway simulator keeps its
    48 h window per process): a token, and every customer-service push recorded and accepted."""

    def __init__(self) -> None:
        import http.server
        import json as _json

        pushes = self.pushes = []  # type: list[dict]

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, payload: dict) -> None:
                body = _json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer({"access_token": "fake-token", "expires_in": 7200})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "custom/send" in self.path:
                    pushes.append(_json.loads(raw or b"{}"))
                self._answer({"errcode": 0, "errmsg": "ok"})

            def log_message(self, *_args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}/cgi-bin/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()


class ProdStack:
    """`ketepai run --prod` on a fresh PostgreSQL schema (through a cuttable proxy), Redis db 13
    and a fake WeChat API; `start()` waits until healthy, `stop()` removes everything."""

    def __init__(self, folder: Path, **env: str) -> None:
        import uuid

        from tests.conftest import free_port

        self.folder = folder
        self.schema = f"ktp_prod_{uuid.uuid4().hex[:8]}"
        self.proxy, self.api = TcpProxy(5432), FakeWeChatApi()
        self.db_url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.proxy.port}/test"
        self.db_url += f"?options=-csearch_path%3D{self.schema}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "run.log"
        self.env = {
            **os.environ,
            "KTP_PORT": str(self.port),
            "RASA_PORT": str(free_port()),
            "ACTION_PORT": str(free_port()),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": "redis://127.0.0.1:6379/13",
            "KTP_SIMULATOR": "0",
            "WECHAT_TOKEN": TOKEN,
            "WECHAT_APP_ID": "wxprodtest",
            "WECHAT_APP_SECRET": "prod-test-secret",
            "WECHAT_API_BASE": self.api.base,
            "KTP_GATEWAY_WORKERS": "2",
            "KTP_RASA_WORKERS": "1",
            "KTP_DATA_KEY": "tlfyD8dgZVRZFVOTbDkM0QH5VgGrxfLJxFD8GhdLK0k=",
            "KTP_SESSION_SECRET": "prod-test",
            "KTP_VAR_DIR": str(folder),
            "KTP_SPOOL_DIR": str(folder / "spool"),
            "KTP_MEDIA_DIR": str(folder / "media"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300) -> bool:
        """Create the schema, start the stack, wait until /healthz is 200."""
        from sqlalchemy import text

        from tests.conftest import PG_URL

        admin = db.make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        admin.dispose()
        repo = Path(__file__).resolve().parents[1]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "run", "--prod"],
                cwd=repo,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        proc = self.proc
        # Stop waiting as soon as the supervisor has exited (e.g. no trained model).
        wait_until(lambda: proc.poll() is not None or get(f"{self.base}/healthz")[0] == 200,
                   timeout_s)  # fmt: skip
        return proc.poll() is None and get(f"{self.base}/healthz")[0] == 200

    def child(self, needle: str) -> int:
        """The pid of one supervised child: "bot.cli serve", "rasa_sdk", "-m rasa run"."""
        assert self.proc is not None
        return find_child(self.proc.pid, needle)

    def stop(self) -> None:
        """SIGINT the supervisor, close the proxy and the fake API, drop the schema."""
        from sqlalchemy import text

        from tests.conftest import PG_URL

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proxy.close()
        self.api.close()
        admin = db.make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        admin.dispose()
