"""Fit the reranker and the confidence calibration on the DEV tuning set; check on the guard set.

    .venv/bin/python -m bench.kb_calibrate      # prints RERANK, CALIBRATION and a threshold table

The reranker is a logistic regression over the first-stage pool of each question (one row per
candidate card, 1 for the card that answers it), fitted on tests/kb/dev_questions.yml. The
calibration (logistic on the top probability and its margin over the runner-up) is fitted on
out-of-fold reranker probabilities of the same set, so it is not fooled by the reranker having
seen the questions. tests/kb/dev_check.yml is only measured. Never run on tests/kb/questions.yml:
that set measures, it does not tune.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.kb_eval import DEV, DEV_CHECK, load_questions, metrics, run
from bot import kb_search
from bot.kb_search import FEATURES, Retriever
from bot.knowledge import Names, load_cards, load_names

C_RERANK = 1.0
FOLDS = 5


def pools(
    retriever: Retriever, names: Names, questions: list[dict[str, Any]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per question: the pool's feature rows and 0/1 labels (1 = the card that answers it)."""
    out = []
    for q in questions:
        text = str(q["q"])
        crop = q.get("crop") or names.find_crop(text)
        crop = names.canonical_crop(str(crop)) or crop if crop else None
        pool = retriever.pool(
            text=text, crop=crop, pest=names.find_pest(text), category=q.get("category")
        )
        if pool is None:
            out.append((np.zeros((0, len(FEATURES))), np.zeros(0)))
            continue
        ids = [retriever.cards[int(i)].id for i in pool.idx]
        out.append((pool.x, np.array([float(i == q.get("card")) for i in ids])))
    return out


def fit_rerank(data: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, ...]:
    """Intercept and weights of the pointwise logistic reranker."""
    x = np.vstack([d[0] for d in data if len(d[1])])
    y = np.concatenate([d[1] for d in data if len(d[1])])
    model = LogisticRegression(C=C_RERANK, max_iter=2000).fit(x, y)
    return (float(model.intercept_[0]), *(float(v) for v in model.coef_[0]))


def top_features(
    data: list[tuple[np.ndarray, np.ndarray]], rerank: tuple[float, ...]
) -> tuple[list[list[float]], list[int]]:
    """For each question with a pool: [top probability, margin] and whether the top is right."""
    x, y = [], []
    for feats, labels in data:
        if not len(labels):
            continue
        p = 1.0 / (1.0 + np.exp(-(rerank[0] + feats @ np.asarray(rerank[1:]))))
        order = np.argsort(-p, kind="stable")
        second = p[order[1]] if len(order) > 1 else 0.0
        x.append([float(p[order[0]]), float(p[order[0]] - second)])
        y.append(int(labels[order[0]]))
    return x, y


def main() -> int:
    """Fit on the tuning set, print the constants, then the figures on both dev sets."""
    names = load_names()
    retriever = Retriever(load_cards(), names)
    tune = load_questions(DEV)
    data = pools(retriever, names, tune)
    rerank = fit_rerank(data)
    # Out-of-fold probabilities for the calibration.
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(data)) % FOLDS
    cx: list[list[float]] = []
    cy: list[int] = []
    for f in range(FOLDS):
        w = fit_rerank([d for d, g in zip(data, fold, strict=True) if g != f])
        x, y = top_features([d for d, g in zip(data, fold, strict=True) if g == f], w)
        cx += x
        cy += y
    cal = LogisticRegression(C=10.0).fit(np.array(cx), np.array(cy))
    calibration = (float(cal.intercept_[0]), *(float(v) for v in cal.coef_[0]))
    print("RERANK = (" + ", ".join(f"{v:.2f}" for v in rerank) + ")")
    for name, v in zip(("intercept", *FEATURES), rerank, strict=True):
        print(f"  {name:12} {v:+.2f}")
    print("CALIBRATION = (" + ", ".join(f"{v:.2f}" for v in calibration) + ")")
    if "--show" in sys.argv:
        return 0
    kb_search.RERANK = tuple(round(v, 2) for v in rerank)
    kb_search.CALIBRATION = tuple(round(v, 2) for v in calibration)  # type: ignore[assignment]
    for path in (DEV, DEV_CHECK):
        scored = run(retriever, names, load_questions(path))
        print(f"{path.name}:")
        for at in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8):
            m = metrics(scored, at, 0.3)
            print(
                f"  answer>={at:.2f}: precision {m['precision']:.3f} answered "
                f"{m['answered']:.3f} clarified {m['clarified']:.3f} (right card in it "
                f"{m['clarify_contains_right_card']:.3f}) handed over {m['handed_over']:.3f} "
                f"top1 {m['top1_accuracy_answerable']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
