"""Held-out evaluation of Rasa models and the rule that decides whether a new one may replace
the current one. Metrics and the rule are pure; `python -m bot.model_eval A B ...` loads each
model in turn in one child process and prints their figures as JSON (the same code for all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "tests" / "nlu" / "heldout.yml"
FALLBACK = "nlu_fallback"
_ANNOTATION = re.compile(r"\[([^\]]+)\]\(([a-z_]+)\)")


@dataclass(frozen=True)
class Gold:
    """One held-out message: its text, intent and annotated crop names."""

    text: str
    intent: str
    crops: tuple[str, ...]


@dataclass
class Figures:
    """A model's held-out figures (intent over the best real intent, crop micro-F1)."""

    n: int
    accuracy: float
    macro_f1: float
    crop_f1: float
    recall: dict[str, float] = field(default_factory=dict)
    support: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figures:
        """From as_dict()'s output."""
        return cls(
            **{k: d[k] for k in ("n", "accuracy", "macro_f1", "crop_f1", "recall", "support")}
        )


@dataclass(frozen=True)
class Rule:
    """How much worse a candidate may be and still replace the current model."""

    macro_f1_drop: float = 0.01
    accuracy_drop: float = 0.02
    crop_f1_drop: float = 0.02
    # Per intent: at most this drop in recall, and never less than one message's worth: the
    # small intents have 5-7 held-out messages, where one flip is 0.14-0.2 and is noise of
    # retraining (measured: a retrain with 3 FAQ examples added flipped one of 6 `inform`).
    recall_drop: float = 0.15
    min_support: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Rule:
        """The rule, with any of KTP_MODEL_MAX_DROP_F1 / _ACCURACY / _CROP_F1 / _RECALL set by
        the operator (a drop as a fraction, 0-1). A bad value stops with a clear message."""
        env = os.environ if env is None else env
        default = cls()
        return cls(
            macro_f1_drop=_drop(env, "KTP_MODEL_MAX_DROP_F1", default.macro_f1_drop),
            accuracy_drop=_drop(env, "KTP_MODEL_MAX_DROP_ACCURACY", default.accuracy_drop),
            crop_f1_drop=_drop(env, "KTP_MODEL_MAX_DROP_CROP_F1", default.crop_f1_drop),
            recall_drop=_drop(env, "KTP_MODEL_MAX_DROP_RECALL", default.recall_drop),
        )


def _drop(env: Mapping[str, str], var: str, default: float) -> float:
    """A tolerated drop (a fraction, 0-1) from `var`, or `default` when unset."""
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{var} must be a number between 0 and 1, not {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{var} must be between 0 and 1, not {value}")
    return value


@dataclass(frozen=True)
class Verdict:
    """Accept or refuse, with the reasons (in Chinese, for the admin page)."""

    accepted: bool
    reasons: tuple[str, ...]


def load_gold(path: Path = HELDOUT) -> list[Gold]:
    """The held-out examples, annotations stripped (crop values kept)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = []
    for block in doc.get("nlu") or []:
        if not block.get("intent"):
            continue
        for line in str(block.get("examples") or "").splitlines():
            raw = line.strip()[2:].strip() if line.strip().startswith("- ") else ""
            if raw:
                crops = tuple(m.group(1) for m in _ANNOTATION.finditer(raw) if m.group(2) == "crop")
                out.append(Gold(_ANNOTATION.sub(r"\1", raw), str(block["intent"]), crops))
    return out


def intent_figures(gold: Sequence[str], pred: Sequence[str]) -> tuple[float, float, dict, dict]:
    """Accuracy, macro-F1 over the gold labels, per-intent recall and support."""
    labels = sorted(set(gold))
    pairs = list(zip(gold, pred, strict=True))
    f1s, recall, support = [], {}, {}
    for label in labels:
        tp = sum(g == p == label for g, p in pairs)
        n_gold = sum(g == label for g, _ in pairs)
        n_pred = sum(p == label for _, p in pairs)
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_gold if n_gold else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        recall[label], support[label] = rec, n_gold
    accuracy = sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0
    macro = sum(f1s) / len(f1s) if f1s else 0.0
    return accuracy, macro, recall, support


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Micro F1 over (message, value) pairs; 1.0 when there is nothing to find or found."""
    tp = fp = fn = 0
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(g), set(p)
        tp, fp, fn = tp + len(gs & ps), fp + len(ps - gs), fn + len(gs - ps)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def figures(
    gold: Sequence[Gold], intents: Sequence[str], crops: Sequence[Sequence[str]], canon: dict
) -> Figures:
    """Figures of predictions against the gold (crop names mapped to canonical ones)."""
    acc, macro, recall, support = intent_figures([g.intent for g in gold], intents)
    gold_crops = [[canon.get(c, c) for c in g.crops] for g in gold]
    pred_crops = [[canon.get(c, c) for c in p] for p in crops]
    crop = entity_f1(gold_crops, pred_crops)
    return Figures(len(gold), acc, macro, crop, recall, support)


def compare(current: Figures | None, candidate: Figures, rule: Rule | None = None) -> Verdict:
    """Accept the candidate unless it is worse than the current model beyond the rule."""
    rule = rule or Rule()
    if current is None:
        return Verdict(True, ("没有正在使用的模型可比，直接启用",))
    from bot.admin.nlu_inbox import intent_label  # the page's Chinese names (lazy: no cycle)

    reasons = []
    checks = (
        ("意图宏平均F1", current.macro_f1, candidate.macro_f1, rule.macro_f1_drop),
        ("意图准确率", current.accuracy, candidate.accuracy, rule.accuracy_drop),
        ("作物识别F1", current.crop_f1, candidate.crop_f1, rule.crop_f1_drop),
    )
    for name, old, new, drop in checks:
        if new < old - drop - 1e-9:
            reasons.append(f"{name}从 {old:.3f} 降到 {new:.3f}（最多允许降 {drop}）")
    for intent, old in sorted(current.recall.items()):
        if current.support.get(intent, 0) < rule.min_support:
            continue
        new = candidate.recall.get(intent, 0.0)
        allowed = max(rule.recall_drop, 1.0 / current.support[intent])  # one message may flip
        if new < old - allowed - 1e-9:
            reasons.append(f"意图「{intent_label(intent)}」的召回率从 {old:.2f} 降到 {new:.2f}")
    return Verdict(not reasons, tuple(reasons) or ("新模型不比现在的差",))


def _canonical_crops() -> dict[str, str]:
    from bot.knowledge import load_names

    names = load_names()
    return {form: c for c, aliases in names.crops.items() for form in (c, *aliases)}


def _predict(result: dict[str, Any]) -> tuple[str, list[str]]:
    top = (result.get("intent") or {}).get("name") or ""
    ranking = [r.get("name") for r in result.get("intent_ranking") or []]
    best_real = next((n for n in ranking if n and n != FALLBACK), top)
    crops = [str(e["value"]) for e in result.get("entities") or [] if e.get("entity") == "crop"]
    return str(best_real), crops


def evaluate(model: Path, gold: Sequence[Gold]) -> Figures:
    """Load `model` in this process (TensorFlow: call it in a child) and score it."""
    from rasa.core.agent import Agent
    from rasa.utils.log_utils import configure_structlog

    # Unconfigured, Rasa's structlog prints a debug line for every message parsed: hundreds
    # of lines the update reads through, and time lost on 2 cores.
    configure_structlog(logging.WARNING)
    agent = Agent.load(str(model))
    loop = asyncio.new_event_loop()
    try:
        preds = [_predict(loop.run_until_complete(agent.parse_message(g.text))) for g in gold]
    finally:
        loop.close()
    return figures(gold, [p[0] for p in preds], [p[1] for p in preds], _canonical_crops())


def main(argv: Sequence[str] | None = None) -> int:
    """Print {"<model>": Figures} as one JSON line for every model given."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--heldout", default=str(HELDOUT))
    args = parser.parse_args(argv)
    gold = load_gold(Path(args.heldout))
    out = {}
    for i, m in enumerate(args.models, 1):  # progress for the admin page (bot.model_update)
        sys.stdout.write(f"EVAL {i}/{len(args.models)} {Path(m).name}\n")
        sys.stdout.flush()
        out[m] = evaluate(Path(m), gold).as_dict()
    # On a line of its own: Rasa's console logging may leave a colour reset before it.
    sys.stdout.write("\nFIGURES " + json.dumps(out, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
