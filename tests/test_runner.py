"""The runner's pure parts: which model, which Rasa endpoints."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from bot.runner import newest_model, rasa_endpoints
from bot.settings import Settings


def test_newest_model_is_the_newest_tar_gz(tmp_path: Path) -> None:
    assert newest_model(tmp_path) is None
    old, new = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    now = time.time()
    os.utime(old, (now, now))
    os.utime(new, (now - 100, now - 100))
    (tmp_path / "c.txt").write_bytes(b"x")
    assert newest_model(tmp_path) == old


def test_without_redis_the_plain_endpoints_file_is_used(tmp_path: Path) -> None:
    path = rasa_endpoints(Settings(), tmp_path)
    assert path.name == "endpoints.yml" and not list(tmp_path.iterdir())


def test_with_redis_rasa_gets_shared_tracker_and_lock_stores(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis://:s3cret@10.0.0.5:6380/2", action_port=5099)
    doc = yaml.safe_load(rasa_endpoints(settings, tmp_path).read_text())
    assert doc["action_endpoint"]["url"] == "http://127.0.0.1:5099/webhook"
    for store in ("tracker_store", "lock_store"):
        assert doc[store]["type"] == "redis"
        assert (doc[store]["url"], doc[store]["port"], doc[store]["db"]) == ("10.0.0.5", 6380, 2)
        assert doc[store]["password"] == "s3cret"


def test_a_restarted_rasa_comes_back_on_the_newest_model(tmp_path: Path) -> None:
    """prod's supervisor: an admin's switch since start (the accepted model moved into models/
    as the newest) survives a Rasa crash."""
    from bot.prod import with_newest_model

    old, new = tmp_path / "20260101-old.tar.gz", tmp_path / "20260102-new.tar.gz"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    os.utime(old, (time.time() - 60, time.time() - 60))
    argv = ["python", "-m", "bot.rasa_main", "run", "--model", str(old), "--port", "5005"]
    assert with_newest_model(argv, tmp_path) == [*argv[:5], str(new), "--port", "5005"]
    assert argv[5] == str(old)  # not changed in place
    assert with_newest_model(argv, tmp_path / "empty") == argv
