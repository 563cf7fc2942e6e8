"""Model updates: the metrics and the accept/refuse rule (tables), and the orchestration with a
fake trainer and a fake Rasa server (switch, refusal, failure, one at a time, restore)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import db, model_rasa
from bot.admin_models import ModelSwitch
from bot.model_eval import Figures, Gold, compare, entity_f1, figures, intent_figures, load_gold
from bot.model_rasa import epoch_of
from bot.model_update import Busy, Shared, Status, Updater


def fig(macro: float, acc: float = 0.9, crop: float = 0.9, **recall: float) -> Figures:
    return Figures(100, acc, macro, crop, recall, {k: 10 for k in recall})


@pytest.mark.parametrize(
    ("current", "candidate", "accepted"),
    [
        (fig(0.80), fig(0.80), True),
        (fig(0.80), fig(0.795), True),  # within 0.01
        (fig(0.80), fig(0.789), False),  # macro-F1 down by more than 0.01
        (fig(0.80), fig(0.95), True),
        (fig(0.80, acc=0.90), fig(0.80, acc=0.87), False),  # accuracy down by 0.03
        (fig(0.80, crop=0.95), fig(0.80, crop=0.94), True),
        (fig(0.80, crop=0.95), fig(0.80, crop=0.90), False),  # crop F1 down by 0.05
        (fig(0.8, ask_pest=0.9), fig(0.8, ask_pest=0.8), True),  # one message of ten
        (fig(0.8, ask_pest=0.9), fig(0.8, ask_pest=0.7), False),  # two messages of ten
        (fig(0.8, ask_pest=0.9), fig(0.8), False),  # an intent no longer predicted at all
        (None, fig(0.1), True),  # nothing loaded to compare with
    ],
)
def test_the_rule(current: Figures | None, candidate: Figures, accepted: bool) -> None:
    verdict = compare(current, candidate)
    assert verdict.accepted is accepted and verdict.reasons


@pytest.mark.parametrize(("new_recall", "accepted"), [(5 / 6, True), (4 / 6, True), (3 / 6, False)])
def test_one_message_of_a_small_intent_may_flip_not_two(new_recall: float, accepted: bool) -> None:
    """`inform` has 6 held-out messages: one flip (0.17) is retraining noise, two are not."""
    old = Figures(184, 0.86, 0.87, 0.97, {"inform": 5 / 6}, {"inform": 6})
    new = Figures(184, 0.86, 0.87, 0.97, {"inform": new_recall}, {"inform": 6})
    assert compare(old, new).accepted is accepted


def test_intents_with_little_support_do_not_veto() -> None:
    old = Figures(10, 0.9, 0.8, 0.9, {"greet": 1.0}, {"greet": 2})
    new = Figures(10, 0.9, 0.8, 0.9, {"greet": 0.0}, {"greet": 2})
    assert compare(old, new).accepted


@pytest.mark.parametrize(
    ("gold", "pred", "acc", "macro"),
    [
        (["a", "a", "b", "b"], ["a", "a", "b", "b"], 1.0, 1.0),
        (["a", "a", "b", "b"], ["a", "a", "a", "a"], 0.5, (2 / 3 + 0) / 2),
        (["a", "b"], ["c", "c"], 0.0, 0.0),  # a label outside the gold counts as wrong
    ],
)
def test_intent_figures(gold: list[str], pred: list[str], acc: float, macro: float) -> None:
    a, m, recall, support = intent_figures(gold, pred)
    assert a == pytest.approx(acc) and m == pytest.approx(macro)
    assert set(recall) == set(support) == set(gold)


@pytest.mark.parametrize(
    ("gold", "pred", "f1"),
    [
        ([[]], [[]], 1.0),
        ([["猕猴桃"]], [["猕猴桃"]], 1.0),
        ([["猕猴桃"], ["玉米"]], [["猕猴桃"], []], 2 * 1 * 0.5 / 1.5),
        ([["猕猴桃"]], [["苹果"]], 0.0),
    ],
)
def test_entity_f1(gold: list[list[str]], pred: list[list[str]], f1: float) -> None:
    assert entity_f1(gold, pred) == pytest.approx(f1)


def test_figures_map_crop_aliases_like_the_synonym_mapper() -> None:
    gold = [Gold("奇异果叶子黄", "ask_disease", ("奇异果",))]
    f = figures(gold, ["ask_disease"], [["猕猴桃"]], {"奇异果": "猕猴桃"})
    assert (f.accuracy, f.macro_f1, f.crop_f1) == (1.0, 1.0, 1.0)


def test_the_heldout_file_is_read_with_its_crops() -> None:
    gold = load_gold()
    assert len(gold) > 150 and len({g.intent for g in gold}) > 10
    assert any(g.crops for g in gold) and not any("](" in g.text for g in gold)


def test_the_metrics_agree_with_the_nlu_benchmark() -> None:
    bench = pytest.importorskip("bench.nlu_report")
    gold = ["a", "a", "b", "c", "c", "c"]
    pred = ["a", "b", "b", "c", "a", "c"]
    a, m, _, _ = intent_figures(gold, pred)
    ref = bench.intent_metrics(gold, pred)
    assert (a, m) == pytest.approx((ref["accuracy"], ref["macro_f1"]))
    g, p = [["x"], ["y", "z"], []], [["x"], ["y"], ["w"]]
    assert entity_f1(g, p) == pytest.approx(bench.entity_prf(g, p)["f1"])


def test_epoch_progress_is_read_from_rasas_bar() -> None:
    assert epoch_of("Epochs:  45%|████▌     | 27/60 [00:10<00:12, 2.6it/s, t_loss=1.2]") == (27, 60)
    assert epoch_of("2026-11-22 INFO rasa.engine.training - Starting to train") is None


class FakeTrainer:
    """Writes a file for the candidate; figures from a table; can fail or block."""

    def __init__(self, tmp: Path, figs: dict[str, Figures], fail: str | None = None) -> None:
        self.tmp, self.figs, self.fail = tmp, figs, fail
        self.gate: threading.Event | None = None
        self.evaluated: list[list[str]] = []

    def validate(self, on_line: Any) -> None:
        if self.fail == "validate":
            raise RuntimeError("rasa data validate: 数据有错")

    def train(self, on_line: Any) -> Path:
        if self.gate is not None:
            self.gate.wait(5)
        on_line("Epochs:  50%|█  | 1/2 [00:01<00:01]", 1, 2)
        path = self.tmp / "cand" / "new.tar.gz"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"model")
        return path

    def evaluate(self, models: Sequence[Path], on_line: Any) -> dict[str, Figures]:
        self.evaluated.append([m.name for m in models])
        return {str(m): self.figs[m.name] for m in models}


class FakeRasa:
    def __init__(self, loaded: str | None) -> None:
        self.loaded = loaded
        self.loads: list[Path] = []

    def current_model(self) -> str | None:
        return self.loaded

    def load(self, model: Path) -> None:
        self.loads.append(model)
        self.loaded = model.name


@pytest.fixture
def setup(tmp_path: Path, sqlite_url: str) -> Any:
    db.upgrade(sqlite_url)
    sessions = db.make_sessionmaker(db.make_engine(sqlite_url))
    models = tmp_path / "models"
    models.mkdir()
    (models / "old.tar.gz").write_bytes(b"old")

    def make(new: Figures, fail: str | None = None) -> tuple[Updater, FakeTrainer, FakeRasa]:
        trainer = FakeTrainer(tmp_path, {"old.tar.gz": fig(0.8), "new.tar.gz": new}, fail)
        rasa = FakeRasa("old.tar.gz")
        return Updater(trainer, rasa, lambda: sessions, models_dir=models), trainer, rasa

    return make, sessions, models


def _rows(sessions: Any) -> list[ModelSwitch]:
    with sessions() as s:
        return list(s.execute(select(ModelSwitch).order_by(ModelSwitch.id)).scalars())


def test_a_better_model_is_switched_to_and_recorded(setup: Any) -> None:
    make, sessions, models = setup
    updater, trainer, rasa = make(fig(0.85))
    status = updater.run("account:admin")
    assert status["phase"] == "done" and status["epochs"] == 2
    assert trainer.evaluated == [["old.tar.gz", "new.tar.gz"]]  # both, in one go
    assert rasa.loads == [models / "new.tar.gz"] and (models / "new.tar.gz").exists()
    (row,) = _rows(sessions)
    assert (row.action, row.actor) == ("switch", "account:admin")
    assert row.from_model.endswith("old.tar.gz") and row.to_model.endswith("new.tar.gz")
    assert row.figures["candidate"]["macro_f1"] == 0.85


def test_a_worse_model_is_refused_with_the_figures(setup: Any, tmp_path: Path) -> None:
    make, sessions, models = setup
    updater, _, rasa = make(fig(0.5))
    status = updater.run("account:admin")
    assert status["phase"] == "refused" and rasa.loads == []
    assert status["current"]["macro_f1"] == 0.8 and status["candidate"]["macro_f1"] == 0.5
    assert any("宏平均F1" in r for r in status["reasons"])
    assert not (models / "new.tar.gz").exists() and not (tmp_path / "cand/new.tar.gz").exists()
    assert [r.action for r in _rows(sessions)] == ["refused"]


def test_invalid_data_stops_before_training(setup: Any) -> None:
    make, sessions, _ = setup
    updater, trainer, rasa = make(fig(0.9), fail="validate")
    status = updater.run("account:admin")
    assert status["phase"] == "failed" and "数据有错" in status["detail"]
    assert trainer.evaluated == [] and rasa.loads == []
    assert [r.action for r in _rows(sessions)] == ["failed"]


def test_one_training_at_a_time(setup: Any) -> None:
    make, _, _ = setup
    updater, trainer, _ = make(fig(0.9))
    trainer.gate = threading.Event()
    thread = updater.start("account:a")
    with pytest.raises(Busy):
        updater.start("account:b")
    assert updater.status()["running"]
    trainer.gate.set()
    thread.join(5)
    assert updater.status()["phase"] == "done"


def test_the_previous_model_can_be_restored(setup: Any) -> None:
    make, sessions, models = setup
    updater, _, rasa = make(fig(0.9))
    updater.run("account:admin")
    switch = _rows(sessions)[0]
    restored = updater.restore("account:admin", switch.id)
    assert restored == models / "old.tar.gz" and rasa.loads[-1] == restored
    newest = max(models.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime_ns)
    assert newest.name == "old.tar.gz"  # `make run` starts with it as well
    last = _rows(sessions)[-1]
    assert last.action == "restore" and last.to_model.endswith("old.tar.gz")


def test_gateway_workers_share_the_lock_and_the_status(setup: Any, tmp_path: Path) -> None:
    """Two gateway processes (KTP_GATEWAY_WORKERS) see one update: one lock, one status."""
    make, _, _ = setup
    shared = tmp_path / "var"
    a, trainer, _ = make(fig(0.9))
    b, _, _ = make(fig(0.9))
    a._shared, b._shared = Shared(shared), Shared(shared)
    assert b.status()["phase"] == "idle"
    trainer.gate = threading.Event()
    thread = a.start("account:a")
    with pytest.raises(Busy):
        b.start("account:b")  # the other worker: refused, not a second training
    st = b.status()
    assert st["running"] and st["phase"] in ("validating", "training")
    trainer.gate.set()
    thread.join(5)
    assert b.status()["phase"] == "done" and b.status()["to_model"].endswith("new.tar.gz")


def test_an_update_whose_process_died_shows_as_failed(setup: Any, tmp_path: Path) -> None:
    make, _, _ = setup
    shared = Shared(tmp_path / "var")
    shared.lock_path.parent.mkdir()
    shared.write(Status(phase="training", started_at=1.0, epoch=3, epochs=60))  # nobody holds it
    updater, _, _ = make(fig(0.9))
    updater._shared = shared
    st = updater.status()
    assert st["phase"] == "failed" and not st["running"] and "中途退出" in st["detail"]
    assert updater.run("account:a")["phase"] == "done"  # and a new update may start


def test_the_page_shows_steps_not_rasas_raw_output(setup: Any) -> None:
    make, _, _ = setup
    updater, _, _ = make(fig(0.9))
    seen: list[str] = []
    on_eval = updater._line("evaluating")
    for line in ("return self.randrange(a, b+1)", "EVAL 2/2 new.tar.gz", "WARNING tensorflow"):
        on_eval(line, None, None)
        seen.append(updater.status()["detail"])
    step = "在留出测试集上评估模型 2/2：new.tar.gz"
    assert seen == ["", step, step]
    updater._line("validating")("2026 INFO rasa.validator - Validating intents...", None, None)
    assert updater.status()["detail"] == step


@pytest.mark.parametrize(
    "output",
    [
        'EVAL 1/1 m.tar.gz\nFIGURES {"m": 1}\n',
        '\x1b[0mFIGURES {"m": 1}\n',  # Rasa's console logging left a colour reset before it
    ],
)
def test_the_evaluation_childs_figures_are_found(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_rasa, "run_child", lambda *a, **k: output)
    monkeypatch.setattr(model_rasa.Figures, "from_dict", staticmethod(lambda v: v))
    assert model_rasa.RasaTrainer().evaluate([Path("m")], lambda *a: None) == {"m": 1}


def test_no_figures_is_a_failure_with_the_output(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_rasa, "run_child", lambda *a, **k: "Killed\n")
    with pytest.raises(model_rasa.StepFailed, match="评估没有给出结果"):
        model_rasa.RasaTrainer().evaluate([Path("m")], lambda *a: None)
    make, _, _ = setup
    updater, trainer, _ = make(fig(0.9))
    trainer.evaluate = lambda models, on_line: next(iter(()))
    status = updater.run("account:a")
    assert status["phase"] == "failed" and status["detail"] == "StopIteration"


def test_the_operator_may_set_the_tolerances() -> None:
    from bot.model_eval import Rule

    assert Rule.from_env({}) == Rule()
    rule = Rule.from_env({"KTP_MODEL_MAX_DROP_F1": "0.05", "KTP_MODEL_MAX_DROP_RECALL": "0.3"})
    assert (rule.macro_f1_drop, rule.recall_drop, rule.accuracy_drop) == (0.05, 0.3, 0.02)
    assert compare(fig(0.80), fig(0.76), rule).accepted
    assert not compare(fig(0.80), fig(0.74), rule).accepted
    for bad in ("x", "1.5", "-0.1"):
        with pytest.raises(ValueError, match="KTP_MODEL_MAX_DROP_ACCURACY"):
            Rule.from_env({"KTP_MODEL_MAX_DROP_ACCURACY": bad})
