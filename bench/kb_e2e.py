"""Knowledge-base answers end to end: the trained Rasa model reads each question, then retrieval.

    .venv/bin/python -m bench.kb_e2e [--questions tests/kb/holdout.yml] [--model models/X.tar.gz]

`make kb-report` scores retrieval with each question's labelled crop and category standing in
for the NLU. Here the newest model in models/ parses the question instead, and the answer is
decided as `action_answer_kb` decides it: category from a consultation intent, crop from the
entity or the text, no crop and no pest → the bot asks for the crop (not answered). A message the
model does not read as a consultation (another intent, or nlu_fallback) is not answered from the
knowledge base either. Prints precision and shares as kb_report does, with where the misses came
from.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from bench import kb_eval
from bench.kb_eval import load_questions, right_cards
from bot.kb_answer import decide
from bot.kb_search import Retriever
from bot.knowledge import load_cards, load_names
from bot.runner import newest_model

REPO = Path(__file__).resolve().parent.parent


async def parse_all(model: Path, texts: list[str]) -> list[dict[str, Any]]:
    """Rasa's parse of every text, in process, with the given model."""
    from rasa.core.agent import Agent
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.WARNING)  # else a debug line per parse
    agent = Agent.load(str(model))
    return [await agent.parse_message(t) for t in texts]


def score(questions: list[dict[str, Any]], parses: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision and shares over the questions, with the NLU's reading."""
    names = load_names()
    retriever = Retriever([c for c in load_cards() if c.status == "published"], names)
    why: Counter[str] = Counter()
    answered = correct = clarified = 0
    for q, parse in zip(questions, parses, strict=True):
        text = str(q["q"])
        intent = (parse.get("intent") or {}).get("name") or ""
        if not intent.startswith("ask_"):
            why["not read as a consultation"] += 1
            continue
        ents = parse.get("entities") or []
        crop = next((e.get("value") for e in ents if e.get("entity") == "crop"), None)
        crop = (names.canonical_crop(str(crop)) or crop) if crop else names.find_crop(text)
        pest = next((e.get("value") for e in ents if e.get("entity") == "pest_disease"), None)
        pest = (names.canonical_pest(str(pest)) or pest) if pest else names.find_pest(text)
        if not crop and not pest:
            why["no crop or pest: the bot asks for the crop"] += 1
            continue
        result = retriever.search(
            text=text, crop=crop, pest=pest, category=intent.removeprefix("ask_")
        )
        d = decide(result)
        if d.kind == "answer":
            answered += 1
            ok = d.cards[0].id in right_cards(q)
            correct += ok
            if not ok:
                why["answered with a wrong card" if q.get("card") else "answered, none fits"] += 1
        elif d.kind == "clarify":
            clarified += 1
            why["clarifying question"] += 1
        else:
            why["handed over (low confidence)"] += 1
    n = len(questions) or 1
    return {
        "n": len(questions),
        "precision": correct / answered if answered else 0.0,
        "answered": answered / n,
        "clarified": clarified / n,
        "why": why,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=Path, default=kb_eval.HOLDOUT)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    model = args.model or newest_model(REPO / "models")
    if model is None:
        raise SystemExit("no model in models/: run `make train` first")
    questions = load_questions(args.questions)
    parses = asyncio.run(parse_all(model, [str(q["q"]) for q in questions]))
    r = score(questions, parses)
    print(f"knowledge base end to end (NLU of {model.name} + retrieval) on {args.questions}")
    print(
        f"  {r['n']} questions: precision {r['precision']:.3f}  answered {r['answered']:.3f}  "
        f"clarified {r['clarified']:.3f}  (goal: precision >= 0.90 with >= 70 % answered)"
    )
    for reason, count in r["why"].most_common():
        print(f"  {reason:45} {count:4d}  ({100 * count / max(1, r['n']):.1f} %)")
    print(f"  load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
