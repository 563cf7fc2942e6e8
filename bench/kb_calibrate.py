"""Fit the reranker and the confidence calibration on the dev sets, with cross-validated figures.

    .venv/bin/python -m bench.kb_calibrate          # CV table, then the constants to paste
    .venv/bin/python -m bench.kb_calibrate --show   # constants only

Data: every question of the three dev sets (tests/kb/dev_questions.yml, dev_check.yml and the old
questions.yml), one pool of first-stage candidates each. The reranker is a pointwise logistic
regression (one row per candidate, 1 for a card that answers the question: `card`, `also` or
`alt`); the calibration is a logistic regression of "the top card is right" on the top
probability, its margin over the runner-up and a few of the top card's features (CAL_FEATURES),
fitted on out-of-fold reranker probabilities.

The figures printed are cross-validated: the questions are split into FOLDS folds (the same
split every run); each fold is answered with a reranker and a calibration fitted on the other
folds only, and the table shows, per set and threshold, what those out-of-fold answers score.
Those are the figures to quote; train-set figures are not printed. The held-out set
(tests/kb/holdout.yml) is never read here.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.kb_eval import DEV_SETS, Scored, label, load_questions, metrics, right_cards
from bot import kb_search
from bot.kb_search import CAL_FEATURES, FEATURES, Pool, Retriever, cal_features
from bot.knowledge import Names, load_cards, load_names

C_RERANK = 1.0
C_CALIBRATION = 10.0
FOLDS = 5
INNER_FOLDS = 4
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
CLARIFY_AT = 0.3


@dataclass
class Item:
    """One dev question, its set and its first-stage pool."""

    q: dict[str, Any]
    source: str
    pool: Pool | None
    labels: np.ndarray  # 1.0 per pool row that is a right card


def items(retriever: Retriever, names: Names) -> list[Item]:
    """Every dev question with its pool, as the action sees it (file's crop/category = NLU)."""
    out = []
    for path in DEV_SETS:
        for q in load_questions(path):
            text = str(q["q"])
            crop = q.get("crop") or names.find_crop(text)
            crop = names.canonical_crop(str(crop)) or crop if crop else None
            pool = retriever.pool(
                text=text, crop=crop, pest=names.find_pest(text), category=q.get("category")
            )
            want = right_cards(q)
            labels = (
                np.array([float(retriever.cards[int(i)].id in want) for i in pool.idx])
                if pool is not None
                else np.zeros(0)
            )
            out.append(Item(q, label(path), pool, labels))
    return out


def fit_rerank(data: list[Item]) -> tuple[float, ...]:
    """Intercept and weights of the pointwise logistic reranker."""
    x = np.vstack([d.pool.x for d in data if d.pool is not None])
    y = np.concatenate([d.labels for d in data if d.pool is not None])
    model = LogisticRegression(C=C_RERANK, max_iter=5000).fit(x, y)
    return (float(model.intercept_[0]), *(float(v) for v in model.coef_[0]))


def top_features(data: list[Item], rerank: tuple[float, ...]) -> tuple[list[np.ndarray], list[int]]:
    """For each question with a pool: the top card's CAL_FEATURES and whether it is right."""
    x, y = [], []
    for d in data:
        if d.pool is None:
            continue
        p = 1.0 / (1.0 + np.exp(-(rerank[0] + d.pool.x @ np.asarray(rerank[1:]))))
        order = np.argsort(-p, kind="stable")
        second = float(p[order[1]]) if len(order) > 1 else 0.0
        x.append(cal_features(d.pool.x[order[0]], float(p[order[0]]), second))
        y.append(int(d.labels[order[0]]))
    return x, y


def fit(data: list[Item], seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Reranker on all of `data`; calibration on out-of-fold reranker probabilities of it."""
    rerank = fit_rerank(data)
    fold = np.random.default_rng(seed).permutation(len(data)) % INNER_FOLDS
    cx: list[np.ndarray] = []
    cy: list[int] = []
    for f in range(INNER_FOLDS):
        w = fit_rerank([d for d, g in zip(data, fold, strict=True) if g != f])
        x, y = top_features([d for d, g in zip(data, fold, strict=True) if g == f], w)
        cx += x
        cy += y
    cal = LogisticRegression(C=C_CALIBRATION, max_iter=5000).fit(np.array(cx), np.array(cy))
    return rerank, (float(cal.intercept_[0]), *(float(v) for v in cal.coef_[0]))


def cross_validated(retriever: Retriever, data: list[Item]) -> dict[str, list[Scored]]:
    """Each question answered by constants fitted without its fold, grouped by set."""
    fold = np.random.default_rng(1).permutation(len(data)) % FOLDS
    out: dict[str, list[Scored]] = {}
    for f in range(FOLDS):
        train = [d for d, g in zip(data, fold, strict=True) if g != f]
        rerank, cal = fit(train)
        for d, g in zip(data, fold, strict=True):
            if g == f:
                result = retriever.rank(d.pool, rerank=rerank, calibration=cal)
                out.setdefault(d.source, []).append(Scored(d.q, result))
    return out


def table(scored: dict[str, list[Scored]]) -> None:
    """Per set (and all together) and threshold: the out-of-fold figures."""
    groups = {**scored, "all dev": [s for v in scored.values() for s in v]}
    for name, rows in groups.items():
        print(f"{name} ({len(rows)} questions), {FOLDS}-fold cross-validated:")
        for at in THRESHOLDS:
            m = metrics(rows, at, CLARIFY_AT)
            print(
                f"  answer>={at:.2f}: precision {m['precision']:.3f} answered "
                f"{m['answered']:.3f} clarified {m['clarified']:.3f} (right card in it "
                f"{m['clarify_contains_right_card']:.3f}) handed over {m['handed_over']:.3f} "
                f"top1 {m['top1_accuracy_answerable']:.3f}"
            )


def main(argv: list[str]) -> int:
    """CV figures, then the constants fitted on every dev question."""
    names = load_names()
    retriever = Retriever(load_cards(), names)
    data = items(retriever, names)
    if "--show" not in argv:
        table(cross_validated(retriever, data))
    rerank, cal = fit(data)
    print("RERANK = (" + ", ".join(f"{v:.2f}" for v in rerank) + ")")
    for name, v in zip(("intercept", *FEATURES), rerank, strict=True):
        print(f"  {name:12} {v:+.2f}")
    print("CALIBRATION = (" + ", ".join(f"{v:.2f}" for v in cal) + ")")
    for name, v in zip(("intercept", *CAL_FEATURES), cal, strict=True):
        print(f"  {name:12} {v:+.2f}")
    if "--write" in argv:
        write(rerank, cal)
    return 0


def write(rerank: tuple[float, ...], cal: tuple[float, ...]) -> None:
    """Put the fitted constants into bot/kb_search.py."""
    path = kb_search.__file__
    with open(path, encoding="utf-8") as f:
        src = f.read()
    body = "".join(f"    {v:.2f},\n" for v in rerank)
    src, n1 = re.subn(
        r"RERANK: tuple\[float, \.\.\.\] = \(\n(?:    -?[0-9.]+,\n)+\)",
        lambda _: f"RERANK: tuple[float, ...] = (\n{body})",
        src,
    )
    line = "CALIBRATION: tuple[float, ...] = (" + ", ".join(f"{v:.2f}" for v in cal) + ")"
    src, n2 = re.subn(
        r"CALIBRATION: tuple\[float, \.\.\.\] = \([^)]*\)", lambda _: line, src, count=1
    )
    if n1 != 1 or n2 != 1:
        raise SystemExit(f"{path}: RERANK/CALIBRATION not found, nothing written")
    with open(path, "w", encoding="utf-8") as f:
        f.write(src)
    print(f"written to {path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
