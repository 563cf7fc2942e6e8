"""`ketepai commissioner`, `ketepai user add` and `ketepai cases escalate` on a fresh database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bot import db, passwords
from bot.cli import main
from bot.handoff_models import Account, Commissioner


@pytest.fixture
def url(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("KTP_SIMULATOR", "1")
    return sqlite_url


def rows(url: str, model: Any) -> list[Any]:
    engine = db.make_engine(url)
    with db.make_sessionmaker(engine)() as session:
        found = list(session.execute(select(model)).scalars())
    engine.dispose()
    return found


def test_commissioner_add_is_idempotent_and_listed(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "commissioner",
        "add",
        "--name",
        "王猕",
        "--openid",
        "o-kiwi",
        "--county",
        "周至县",
        "--specialty",
        "猕猴桃",
        "--specialty",
        "果树",
        "--on-duty",
    ]
    assert main(argv) == 0
    assert main([*argv[:-1], "--day", "1", "--day", "3"]) == 0  # again: updated, not duplicated
    [c] = rows(url, Commissioner)
    assert (c.name, c.county, c.specialties, c.on_duty, c.schedule) == (
        "王猕",
        "周至县",
        ["猕猴桃", "果树"],
        False,
        [1, 3],
    )
    assert main(["commissioner", "list"]) == 0
    assert "王猕\t周至县\t猕猴桃、果树\toff days 1,3\to-kiwi" in capsys.readouterr().out


def test_user_add_takes_the_password_from_the_environment_only(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):  # no --password argument exists
        main(["user", "add", "--username", "a", "--role", "admin", "--password", "x"])
    monkeypatch.setenv("KTP_PASSWORD", "short")
    assert main(["user", "add", "--username", "a", "--role", "admin"]) == 1
    monkeypatch.setenv("KTP_PASSWORD", "long enough password")
    assert main(["user", "add", "--username", "a", "--role", "admin", "--county", "周至县"]) == 0
    assert main(["user", "add", "--username", "c", "--role", "commissioner"]) == 1
    assert "commissioner-openid" in capsys.readouterr().err
    [account] = rows(url, Account)
    assert account.role == "admin" and account.county == "周至县"
    assert account.password_hash.startswith("scrypt$131072$")
    assert passwords.verify_password("long enough password", account.password_hash)
    assert "long enough" not in account.password_hash


def test_cases_escalate_runs_once(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases", "escalate", "--after", "5"]) == 0
    assert "escalated 0 case(s)" in capsys.readouterr().out


def test_an_admin_can_be_bound_to_wechat_for_pushes(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTP_PASSWORD", "long enough password")
    argv = ["user", "add", "--username", "zz", "--role", "admin", "--county", "周至县"]
    assert main([*argv, "--wechat-openid", "o-admin"]) == 0
    assert main(argv) == 0  # a password change keeps the binding
    [account] = rows(url, Account)
    assert account.wechat_openid == "o-admin"
