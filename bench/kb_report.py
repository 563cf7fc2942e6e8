"""`make kb-report`: retrieval quality on the benchmark question set and latency p95.

Latency is measured with the curated cards and with the dasinong import (≈3,500 cards) loaded
through a temporary SQLite database, as the action server reads them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.kb_eval import BENCH, load_questions
from bench.kb_eval import main as eval_main
from bot import db
from bot.kb_import import import_pestdb
from bot.kb_search import Retriever
from bot.kb_store import load_curated, published_cards
from bot.knowledge import Names, load_names

DUMPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference" / "dasinong"


def latency(retriever: Retriever, names: Names, questions: list[dict]) -> tuple[float, float]:
    """p50 and p95 of one search, in ms, over the questions (each run 3 times)."""
    times = []
    for _ in range(3):
        for q in questions:
            text = str(q["q"])
            t0 = time.perf_counter()
            retriever.search(
                text=text,
                crop=q.get("crop"),
                pest=names.find_pest(text),
                category=q.get("category"),
            )
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> int:
    """Print quality figures, then latency with the curated and the imported cards."""
    print(f"load average: {os.getloadavg()}")
    status = eval_main([str(BENCH)])
    names = load_names()
    questions = load_questions(BENCH) or load_questions(BENCH.with_name("dev_questions.yml"))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/kb.db"
        db.upgrade(url)
        engine = db.make_engine(url)
        sessions = db.make_sessionmaker(engine)
        with sessions() as s, s.begin():
            load_curated(s)
        with sessions() as s:
            cards = published_cards(s)
        r = Retriever(cards, names)
        p50, p95 = latency(r, names, questions)
        print(f"latency curated ({len(r.cards)} cards): p50 {p50:.2f} ms  p95 {p95:.2f} ms")
        if DUMPS.is_dir():
            with sessions() as s, s.begin():
                import_pestdb(
                    s, DUMPS / "jsp_db_pestdisaster.sql", DUMPS / "jsp_db_solution.sql",
                    publish=True, progress=False,
                )  # fmt: skip
            with sessions() as s:
                cards = published_cards(s)
            t0 = time.perf_counter()
            r = Retriever(cards, names)
            build = time.perf_counter() - t0
            p50, p95 = latency(r, names, questions)
            print(
                f"latency curated + imported ({len(r.cards)} published cards, index built in "
                f"{build:.1f} s): p50 {p50:.2f} ms  p95 {p95:.2f} ms"
            )
        engine.dispose()
    print(f"load average: {os.getloadavg()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
