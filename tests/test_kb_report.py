"""The knowledge-base benchmark: which sets it reports and how, and what counts as right.

Never reads tests/kb/holdout.yml: the held-out set is replaced by a temporary file here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import kb_eval, kb_report
from bench.kb_eval import QuestionSetError, Scored, load_questions, metrics, right_cards
from bot.kb_search import Candidate, Result
from bot.knowledge import card_from_dict


def _card(cid: str) -> Candidate:
    card = card_from_dict(
        {"id": cid, "crop": "梨", "category": "pest", "topic": cid, "summary": "s",
         "status": "published"}
    )  # fmt: skip
    return Candidate(card, 1.0, 1.0, 1.0, 0.9)


def test_an_also_card_counts_as_right_in_every_set() -> None:
    q = {"q": "梨黑心", "card": "a", "also": ["b"]}
    old = {"q": "梨黑心", "card": "a", "alt": ["c"]}
    assert right_cards(q) == {"a", "b"} and right_cards(old) == {"a", "c"}
    assert right_cards({"q": "价格", "card": None}) == set()
    sure = 0.99
    scored = [
        Scored(q, Result((_card("b"),), sure)),  # the also card: right
        Scored(old, Result((_card("c"),), sure)),  # legacy alt: right
        Scored({"q": "x", "card": "a"}, Result((_card("z"),), sure)),  # wrong
        Scored({"q": "价格", "card": None}, Result((_card("a"),), sure)),  # should not answer
    ]
    m = metrics(scored, 0.6, 0.3)
    assert m["answered"] == 1.0 and m["precision"] == 0.5


def test_bad_question_files_get_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("questions: {q: 1}\n", encoding="utf-8")
    with pytest.raises(QuestionSetError, match="no 'questions:' list"):
        load_questions(bad)
    bad.write_text("questions:\n  - {q: 梨, card: a, also: b}\n", encoding="utf-8")
    with pytest.raises(QuestionSetError, match="'also' must be a list"):
        load_questions(bad)
    bad.write_text("questions: [\n", encoding="utf-8")
    with pytest.raises(QuestionSetError, match="cannot read"):
        load_questions(bad)


def _set(path: Path, card: str = "kiwi-brown-spot") -> Path:
    path.write_text(
        "questions:\n"
        f"  - {{q: 猕猴桃叶子上有褐色斑点, crop: 猕猴桃, category: disease, card: {card}}}\n"
        "  - {q: 猕猴桃今年卖多少钱一斤, crop: 猕猴桃, category: null, card: null}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary held-out file and dev sets in place of the real ones."""
    dev = _set(tmp_path / "dev.yml")
    monkeypatch.setattr(kb_eval, "HOLDOUT", tmp_path / "holdout.yml")
    monkeypatch.setattr(kb_eval, "DEV_SETS", (dev,))
    return tmp_path


def test_the_held_out_set_is_the_headline_when_present(
    sets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kb_report.sets_to_report(None) == [("dev (tuned on)", sets / "dev.yml")]
    assert kb_report.main(["--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "NO HEADLINE" in out and "dev (tuned on)" in out
    _set(sets / "holdout.yml", card="kiwi-canker")  # wrong on purpose: precision 0
    assert kb_report.sets_to_report(None)[0] == ("held-out", sets / "holdout.yml")
    assert kb_report.main(["--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "NO HEADLINE" not in out
    lines = [line for line in out.splitlines() if "held-out" in line or "dev (tuned" in line]
    assert "held-out" in lines[0] and "dev (tuned on)" in lines[1]
    held, dev = lines[0].split(), lines[1].split()
    assert held[3] == "0.000" and dev[5] == "1.000"  # the precision column


def test_questions_option_chooses_the_sets(sets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = _set(sets / "mine.yml")
    assert kb_report.main(["--no-latency", "--questions", str(mine)]) == 0
    out = capsys.readouterr().out
    assert "mine.yml" in out and "dev.yml" not in out and "NO HEADLINE" not in out
    assert kb_report.main(["--no-latency", "--questions", str(sets / "nope.yml")]) == 1
    assert "question set not found" in capsys.readouterr().err
    (sets / "broken.yml").write_text("nothing here\n", encoding="utf-8")
    assert kb_report.main(["--no-latency", "--questions", str(sets / "broken.yml")]) == 1
    assert "ERROR" in capsys.readouterr().out
