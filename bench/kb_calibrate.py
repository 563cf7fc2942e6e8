"""Fit the confidence calibration (logistic on raw score and margin) on the DEV question set.

    .venv/bin/python -m bench.kb_calibrate      # prints CALIBRATION and a threshold table

Never run on tests/kb/questions.yml: that set measures, it does not tune.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.kb_eval import DEV, load_questions, metrics, run
from bot import kb_search
from bot.kb_search import Retriever
from bot.knowledge import load_cards, load_names


def main() -> int:
    """Fit, print the coefficients, then precision/coverage at candidate thresholds."""
    names = load_names()
    scored = run(Retriever(load_cards(), names), names, load_questions(DEV))
    x, y = [], []
    for s in scored:
        c = s.result.candidates
        if not c:
            continue
        margin = c[0].raw - (c[1].raw if len(c) > 1 else 0.0)
        x.append([c[0].raw, margin])
        y.append(int(c[0].card.id == s.q.get("card")))
    model = LogisticRegression(C=10.0).fit(np.array(x), np.array(y))
    coef = (float(model.intercept_[0]), *(float(v) for v in model.coef_[0]))
    print("CALIBRATION = (" + ", ".join(f"{v:.2f}" for v in coef) + ")")
    kb_search.CALIBRATION = coef  # type: ignore[assignment]
    scored = run(Retriever(load_cards(), names), names, load_questions(DEV))
    for at in (0.4, 0.5, 0.6, 0.7, 0.8):
        m = metrics(scored, at, 0.25)
        print(
            f"answer>={at:.1f}: precision {m['precision']:.3f} answered {m['answered']:.3f} "
            f"clarified {m['clarified']:.3f} handed over {m['handed_over']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
