"""Browser tests: the real gateway app on a loopback port and Debian's headless chromium.

The gateway runs in the test's event loop (console, admin and simulator mounted; Rasa is not
needed for these pages) on a fresh SQLite database seeded per test. Chromium is required in CI;
elsewhere the tests skip when it is missing (`make browser` installs it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from bot import db, passwords, roster
from bot.app import create_app
from bot.settings import Settings
from tests.browser.cdp import Browser, Page, find_chromium
from tests.conftest import free_port
from tests.handoff_helpers import data_key

__all__ = ["data_key"]  # fixture: a KTP_DATA_KEY for the seeded phone numbers

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "var" / "screenshots"
PASSWORD = "correct horse battery"
ACCOUNTS = (  # username, role, county, commissioner openid (seed_roster's people)
    ("wang", "commissioner", None, "c-kiwi"),
    ("li", "commissioner", None, "c-fruit"),
    ("admin-zz", "admin", "周至县", None),
)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium; a failure in CI if it is missing, a skip elsewhere."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI: `make browser` installs it (apt-get)")
        pytest.skip("chromium is not installed (run `make browser`, as root)")
    return path


@pytest.fixture
async def browser(chromium_path: str, tmp_path: Path) -> AsyncIterator[Browser]:
    b = await Browser.launch(chromium_path, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield b
    finally:
        await b.close()


@dataclass
class Gateway:
    """The running gateway: its base URL and the database it writes to."""

    url: str
    sessions: sessionmaker

    def __call__(self, path: str) -> str:
        return self.url + path


Seed = Callable[[Session], None]


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheaper scrypt for the test accounts (verification reads the cost from the hash)."""
    monkeypatch.setattr(
        passwords, "hash_password", functools.partial(passwords.hash_password, n=2**10)
    )


def add_accounts(session: Session) -> None:
    for username, role, county, openid in ACCOUNTS:
        roster.add_account(
            session=session,
            username=username,
            password=PASSWORD,
            role=role,
            county=county,
            commissioner_openid=openid,
        )


@pytest.fixture
async def start_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cheap_passwords: None
) -> AsyncIterator[Callable[[Seed], Any]]:
    """start_gateway(seed) → a Gateway on a free loopback port over a fresh, seeded database."""
    monkeypatch.setenv("KTP_SESSION_SECRET", "browser-test-session-secret")
    runners: list[web.AppRunner] = []
    engines: list[Any] = []

    async def start(seed: Seed) -> Gateway:
        url = f"sqlite:///{tmp_path}/ketepai.db"
        db.upgrade(url)
        engine = db.make_engine(url)
        engines.append(engine)
        maker = db.make_sessionmaker(engine)
        with maker() as session:
            seed(session)
            session.commit()
        port = free_port()
        settings = Settings(
            port=port,
            rasa_port=free_port(),  # nothing listens: the pages under test never ask Rasa
            action_port=free_port(),
            database_url=url,
            simulator=True,
            escalate_every_s=3600,
        )
        app = create_app(settings, migrate=False, media_dir=tmp_path / "media")
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return Gateway(f"http://127.0.0.1:{port}", maker)

    yield start
    for runner in runners:
        await runner.cleanup()
    for engine in engines:
        engine.dispose()


async def login(page: Page, gw: Gateway, username: str, password: str = PASSWORD) -> int | None:
    """Sign in through the login form; the status of the page that follows."""
    await page.goto(gw("/console/login"))
    await page.type("#username", username)
    await page.type("#password", password)
    return await page.click_and_wait("#login")


async def logout(page: Page) -> None:
    await page.click_and_wait("#logout")
    assert await page.path() == "/console/login"


async def shot(page: Page, name: str) -> Path:
    """A full-page screenshot into var/screenshots/NAME.png."""
    return await page.screenshot(SCREENSHOTS / f"{name}.png")
