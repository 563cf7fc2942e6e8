"""Knowledge-base retrieval quality on a question set: precision of answers, share answered,
clarified and handed to a person.

    .venv/bin/python -m bench.kb_eval [tests/kb/questions.yml]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.kb_answer import ANSWER_AT, CLARIFY_AT, decide
from bot.kb_search import Result, Retriever
from bot.knowledge import Names, load_cards, load_names

REPO = Path(__file__).resolve().parent.parent
DEV = REPO / "tests" / "kb" / "dev_questions.yml"
DEV_CHECK = REPO / "tests" / "kb" / "dev_check.yml"
BENCH = REPO / "tests" / "kb" / "questions.yml"  # the old benchmark: now a second dev set
HOLDOUT = REPO / "tests" / "kb" / "holdout.yml"  # the fresh set: measured, never tuned on
# Sets retrieval was tuned on (weights, reranker, calibration, card wording): their figures are
# optimistic and always labelled so.
DEV_SETS = (DEV, DEV_CHECK, BENCH)


@dataclass
class Scored:
    """One question, what it should get, and what retrieval returned."""

    q: dict[str, Any]
    result: Result


class QuestionSetError(ValueError):
    """A question file that cannot be read as a question set."""


def load_questions(path: Path) -> list[dict[str, Any]]:
    """The `questions:` list of a question file: each has `q`, `card` (null = no card should
    answer), optional `crop`, `category` and `also` (other cards that answer it just as well)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise QuestionSetError(f"{path}: cannot read the question set ({exc})") from exc
    items = doc.get("questions") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise QuestionSetError(f"{path}: no 'questions:' list")
    for i, q in enumerate(items, 1):
        if not isinstance(q, dict) or not str(q.get("q") or "").strip():
            raise QuestionSetError(f"{path}: question {i} has no text ('q')")
        for key in ALSO_KEYS:
            if not isinstance(q.get(key) or [], list):
                raise QuestionSetError(f"{path}: question {i}: '{key}' must be a list of card ids")
    return list(items)


# Other acceptable cards: `also` (the format of holdout.yml), `alt` in the old questions.yml.
ALSO_KEYS = ("also", "alt")


def right_cards(q: dict[str, Any]) -> set[str]:
    """The ids of every card that answers `q` rightly: `card` and its `also`/`alt` list (empty
    when no card should answer)."""
    ids = {str(q["card"])} if q.get("card") else set()
    return ids | {str(a) for key in ALSO_KEYS for a in q.get(key) or [] if a}


def run(retriever: Retriever, names: Names, questions: list[dict[str, Any]]) -> list[Scored]:
    """Search every question as the action does: file's crop and category stand in for NLU."""
    out = []
    for q in questions:
        text = str(q["q"])
        crop = q.get("crop") or names.find_crop(text)
        crop = names.canonical_crop(str(crop)) or crop if crop else None
        cat = q.get("category")
        res = retriever.search(text=text, crop=crop, pest=names.find_pest(text), category=cat)
        out.append(Scored(q, res))
    return out


def metrics(scored: list[Scored], answer_at: float, clarify_at: float) -> dict[str, float]:
    """Precision of answers, shares answered / clarified / handed over, clarify hit rate."""
    n = len(scored) or 1
    answered = correct = clarified = clar_hit = none = 0
    for s in scored:
        d = decide(s.result, answer_at, clarify_at)
        want = right_cards(s.q)
        if d.kind == "answer":
            answered += 1
            correct += d.cards[0].id in want
        elif d.kind == "clarify":
            clarified += 1
            clar_hit += bool(want & {c.id for c in d.cards})
        else:
            none += 1
    return {
        "questions": len(scored),
        "precision": correct / answered if answered else 0.0,
        "answered": answered / n,
        "clarified": clarified / n,
        "handed_over": none / n,
        "clarify_contains_right_card": clar_hit / clarified if clarified else 0.0,
        "top1_accuracy_answerable": sum(
            bool(s.result.best) and s.result.best.card.id in right_cards(s.q)  # type: ignore[union-attr]
            for s in scored
            if s.q.get("card")
        )
        / max(1, sum(1 for s in scored if s.q.get("card"))),
    }


def label(path: Path) -> str:
    """The path as shown: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str]) -> int:
    """Print the figures for the question file given (default: the old benchmark set, now dev)."""
    args = [a for a in argv if not a.startswith("-")]
    path = Path(args[0]).resolve() if args else BENCH
    if not path.is_file():
        print(f"{path} not found")
        return 1
    try:
        questions = load_questions(path)
    except QuestionSetError as exc:
        print(exc)
        return 1
    names = load_names()
    retriever = Retriever(load_cards(), names)
    scored = run(retriever, names, questions)
    m = metrics(scored, ANSWER_AT, CLARIFY_AT)
    print(f"question set: {label(path)}  thresholds: answer>={ANSWER_AT} clarify>={CLARIFY_AT}")
    for k, v in m.items():
        print(f"  {k:30} {v:.3f}" if isinstance(v, float) else f"  {k:30} {v}")
    if "-v" in argv:
        for s in scored:
            d = decide(s.result, ANSWER_AT, CLARIFY_AT)
            got = [c.id for c in d.cards]
            mark = "ok " if (d.kind == "answer" and got[0] in right_cards(s.q)) else "-- "
            print(
                f"{mark}{d.kind:8} {s.result.confidence:.2f} {s.q['q']} -> {got} "
                f"want {s.q.get('card')}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
