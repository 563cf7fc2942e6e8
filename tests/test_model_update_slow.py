"""A deliberately worse training set is refused: two real models (the production pipeline,
config.yml) trained, validated and evaluated by the real RasaTrainer, judged by the same Updater
and rule as the admin page."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import db
from bot.model_rasa import RasaTrainer
from bot.model_update import Updater

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def broken_copy(src: Path, dst: Path, seed: int = 7) -> None:
    """nlu_data with every intent's examples shuffled between the intents (counts kept)."""
    shutil.copytree(src, dst)
    for path in sorted((dst / "nlu").glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        blocks = [b for b in doc.get("nlu") or [] if b.get("intent")]
        pool = [ln for b in blocks for ln in str(b["examples"]).splitlines() if ln.strip()]
        random.Random(seed).shuffle(pool)
        for b in blocks:
            n = len([ln for ln in str(b["examples"]).splitlines() if ln.strip()])
            b["examples"], pool = "\n".join(pool[:n]) + "\n", pool[n:]
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")


class RecordingRasa:
    """Stands in for the Rasa server's /status and PUT /model (checked live elsewhere)."""

    def __init__(self) -> None:
        self.loaded: str | None = None
        self.loads: list[Path] = []

    def current_model(self) -> str | None:
        return self.loaded

    def load(self, model: Path) -> None:
        self.loads.append(model)
        self.loaded = model.name


def test_a_worse_training_set_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    db.upgrade(sqlite_url)
    sessions = db.make_sessionmaker(db.make_engine(sqlite_url))
    models, rasa = tmp_path / "models", RecordingRasa()

    def updater(data: Path) -> Updater:
        trainer = RasaTrainer(data=data, out=tmp_path / "candidates")
        return Updater(trainer, rasa, lambda: sessions, models_dir=models)

    good: dict[str, Any] = updater(ROOT / "nlu_data").run("account:test")
    assert good["phase"] == "done", good["detail"]
    assert good["candidate"]["macro_f1"] > 0.6
    assert len(rasa.loads) == 1

    broken_copy(ROOT / "nlu_data", tmp_path / "broken")
    bad = updater(tmp_path / "broken").run("account:test")
    assert bad["phase"] == "refused", bad["detail"]
    assert len(rasa.loads) == 1 and rasa.loaded == good["to_model"].rsplit("/", 1)[-1]
    assert bad["current"]["macro_f1"] == pytest.approx(good["candidate"]["macro_f1"])
    assert bad["candidate"]["macro_f1"] < bad["current"]["macro_f1"] - 0.2
    assert any("宏平均F1" in r for r in bad["reasons"])
