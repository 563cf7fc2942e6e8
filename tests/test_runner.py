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
