"""NLU benchmark: k-fold cross-validation of Rasa pipelines and a TF-IDF baseline on the same
folds, held-out accuracy, training time and peak memory, parse latency.

    python -m bench.nlu_report                      # config.yml vs the baseline, full report
    python -m bench.nlu_report --config config.yml --config bench/configs/no_extra.yml

Each fold model is trained by `rasa train nlu` in a child process under `/usr/bin/time -v` (so
its time and peak memory are measured) into var/nlu-exp/, never models/. Predictions are cached
per config and fold: re-running after a crash or to add a config only trains what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline

from bench.nlu_common import HELDOUT_FILE, REPO, TRAIN_FILES, Example, load_examples, to_rasa_yaml
from bot.knowledge import GENERAL, load_names

EXP = REPO / "var" / "nlu-exp"
LOOKUPS = REPO / "nlu_data" / "lookups"
RASA = REPO / ".venv" / "bin" / "rasa"
FALLBACK = "nlu_fallback"
CHILD_ENV = {
    "RASA_TELEMETRY_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


@dataclass
class Prediction:
    """What a model said about one message."""

    intent: str  # top intent, nlu_fallback included
    intent_no_fallback: str  # best real intent (what the classifier itself thinks)
    crops: list[str]
    pests: list[str]


@dataclass
class RunStats:
    """Wall time and peak resident memory of one child process."""

    seconds: float
    peak_mb: float


# --------------------------------------------------------------------------- metrics


def canonical_crop_map() -> dict[str, str]:
    """Every crop name or alias → its canonical name."""
    names = load_names()
    return {f: c for c, al in names.crops.items() if c != GENERAL for f in (c, *al)}


def canonical_pest_map() -> dict[str, str]:
    """Every pest/disease name or alias → its canonical name."""
    names = load_names()
    return {f: c for c, al in names.pests.items() for f in (c, *al)}


def entity_prf(gold: Sequence[list[str]], pred: Sequence[list[str]]) -> dict[str, float]:
    """Micro precision/recall/F1 over (message, value) pairs; values must match exactly."""
    tp = fp = fn = 0
    for g, p in zip(gold, pred, strict=True):
        gs, ps = set(g), set(p)
        tp += len(gs & ps)
        fp += len(ps - gs)
        fn += len(gs - ps)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def intent_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the gold labels (a fallback counts as a wrong answer)."""
    labels = sorted(set(gold))
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
    }


def score(examples: Sequence[Example], preds: Sequence[Prediction]) -> dict[str, Any]:
    """Every figure for one set of predictions against the gold annotations."""
    crops, pests = canonical_crop_map(), canonical_pest_map()
    gold_intents = [e.intent for e in examples]
    gold_crops = [[crops.get(v, v) for v in e.values("crop")] for e in examples]
    gold_pests = [[pests.get(v, v) for v in e.values("pest_disease")] for e in examples]
    return {
        "n": len(examples),
        "intent": intent_metrics(gold_intents, [p.intent_no_fallback for p in preds]),
        "intent_with_fallback": intent_metrics(gold_intents, [p.intent for p in preds]),
        "fallback_rate": sum(p.intent == FALLBACK for p in preds) / max(1, len(preds)),
        "crop": entity_prf(gold_crops, [p.crops for p in preds]),
        "pest_disease": entity_prf(gold_pests, [p.pests for p in preds]),
    }


# --------------------------------------------------------------------------- baseline


class Baseline:
    """TF-IDF over character 1–3-grams + logistic regression; names found by longest match."""

    def __init__(self) -> None:
        self.model = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True),
            LogisticRegression(C=10.0, max_iter=3000),
        )
        self.crops = canonical_crop_map()
        self.pests = canonical_pest_map()

    def fit(self, examples: Sequence[Example]) -> Baseline:
        """Train on `examples`."""
        self.model.fit([e.text for e in examples], [e.intent for e in examples])
        return self

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Intent and names for each text."""
        intents = self.model.predict(list(texts))
        return [
            Prediction(
                str(i), str(i), _longest_matches(t, self.crops), _longest_matches(t, self.pests)
            )
            for t, i in zip(texts, intents, strict=True)
        ]


def _longest_matches(text: str, table: dict[str, str]) -> list[str]:
    found: list[str] = []
    i = 0
    forms = sorted(table, key=len, reverse=True)
    while i < len(text):
        hit = next((f for f in forms if text.startswith(f, i)), None)
        if hit:
            found.append(table[hit])
            i += len(hit)
        else:
            i += 1
    return found


# --------------------------------------------------------------------------- rasa


def timed(cmd: list[str], log: Path) -> RunStats:
    """Run `cmd` niced under /usr/bin/time -v; raise with the log's tail when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **CHILD_ENV}
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(
            ["nice", "-n", "10", "/usr/bin/time", "-v", *cmd],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    seconds = time.perf_counter() - started
    text = log.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return RunStats(seconds, int(rss.group(1)) / 1024 if rss else float("nan"))


def train_nlu(config: Path, train: Sequence[Example], workdir: Path) -> tuple[Path, RunStats]:
    """Train an NLU-only model on `train` plus the lookup tables; return it with its cost."""
    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    (data / "examples.yml").write_text(to_rasa_yaml(train), encoding="utf-8")
    for f in LOOKUPS.glob("*.yml"):
        shutil.copy(f, data / f.name)
    stats = timed(
        [
            str(RASA),
            "train",
            "nlu",
            "--config",
            str(config),
            "--nlu",
            str(data),
            "--out",
            str(workdir),
            "--fixed-model-name",
            "model",
        ],
        workdir / "train.log",
    )
    return workdir / "model.tar.gz", stats


class RasaParser:
    """A trained model loaded in this process, answering like the Rasa server's /model/parse."""

    def __init__(self, model: Path) -> None:
        from rasa.core.agent import Agent

        self.agent = Agent.load(str(model))
        self.loop = asyncio.new_event_loop()

    def parse(self, text: str) -> dict[str, Any]:
        """The parse result for `text`."""
        return dict(self.loop.run_until_complete(self.agent.parse_message(text)))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Predictions for every text."""
        return [to_prediction(self.parse(t)) for t in texts]

    def close(self) -> None:
        """Free the event loop."""
        self.loop.close()


def to_prediction(result: dict[str, Any]) -> Prediction:
    """A Prediction from a Rasa parse result."""
    top = (result.get("intent") or {}).get("name") or ""
    ranking = [r.get("name") for r in result.get("intent_ranking") or []]
    real = next((n for n in ranking if n and n != FALLBACK), top)
    ents = result.get("entities") or []
    return Prediction(
        top,
        str(real),
        [str(e["value"]) for e in ents if e.get("entity") == "crop"],
        [str(e["value"]) for e in ents if e.get("entity") == "pest_disease"],
    )


# --------------------------------------------------------------------------- experiments


def folds(examples: Sequence[Example], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Stratified k folds (by intent), the same for every pipeline and the baseline."""
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    labels = [e.intent for e in examples]
    return [(list(a), list(b)) for a, b in skf.split(labels, labels)]


def config_key(config: Path, examples: Sequence[Example]) -> str:
    """A short hash of the NLU pipeline, the data and our components' code, so cached predictions
    never go stale (dialogue policies in the same file do not matter here)."""
    conf = yaml.safe_load(config.read_text(encoding="utf-8"))
    pipeline = {"language": conf.get("language"), "pipeline": conf.get("pipeline")}
    h = hashlib.sha256(json.dumps(pipeline, sort_keys=True, ensure_ascii=False).encode())
    for e in examples:
        h.update(f"{e.intent}\t{e.raw}\n".encode())
    # Our own components' code too: a fix to it must not reuse predictions of the old one.
    own = [REPO / "bot" / "nlu_components.py"]
    for f in sorted(LOOKUPS.glob("*.yml")) + sorted((REPO / "nlu_data" / "jieba").glob("*")) + own:
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def cross_validate(
    config: Path, examples: Sequence[Example], splits: Sequence[tuple[list[int], list[int]]]
) -> dict[str, Any]:
    """Train and test `config` on every fold; the pooled figures and the per-fold costs."""
    key = config_key(config, examples)
    root = EXP / f"cv-{key}"  # by pipeline: a renamed config file reuses its results
    gold: list[Example] = []
    preds: list[Prediction] = []
    costs: list[dict[str, float]] = []
    for n, (train_idx, test_idx) in enumerate(splits):
        fold_dir = root / f"fold{n}"
        cache = fold_dir / "predictions.json"
        test = [examples[i] for i in test_idx]
        if cache.exists():
            saved = json.loads(cache.read_text(encoding="utf-8"))
            fold_preds = [Prediction(**p) for p in saved["predictions"]]
            cost = saved["cost"]
        else:
            print(f"  {config.name} fold {n + 1}/{len(splits)}: training", flush=True)
            model, stats = train_nlu(config, [examples[i] for i in train_idx], fold_dir)
            parser = RasaParser(model)
            fold_preds = parser.predict([e.text for e in test])
            parser.close()
            cost = {"train_s": stats.seconds, "peak_mb": stats.peak_mb}
            cache.write_text(
                json.dumps(
                    {"predictions": [p.__dict__ for p in fold_preds], "cost": cost},
                    ensure_ascii=False,
                ),
                encoding="utf-8",
            )
            model.unlink(missing_ok=True)  # fold models are big and never reused
        gold += test
        preds += fold_preds
        costs.append(cost)
    result = score(gold, preds)
    result["train_s_mean"] = statistics.mean(c["train_s"] for c in costs)
    result["errors"] = [
        {"text": e.text, "gold": e.intent, "pred": p.intent_no_fallback}
        for e, p in zip(gold, preds, strict=True)
        if e.intent != p.intent_no_fallback
    ]
    return result


def baseline_cv(
    examples: Sequence[Example], splits: Sequence[tuple[list[int], list[int]]]
) -> dict[str, Any]:
    """The baseline on the same folds."""
    gold: list[Example] = []
    preds: list[Prediction] = []
    for train_idx, test_idx in splits:
        test = [examples[i] for i in test_idx]
        model = Baseline().fit([examples[i] for i in train_idx])
        preds += model.predict([e.text for e in test])
        gold += test
    return score(gold, preds)


def full_model(config: Path, reuse: bool = False) -> tuple[Path, RunStats]:
    """Train the whole assistant (NLU and dialogue) as CI does, timed, into var/nlu-exp/.

    With `reuse`, an existing model and the figures in its training log are taken as they are.
    """
    out = EXP / "full"
    log = out / "train.log"
    if reuse and (out / "model.tar.gz").exists() and log.exists():
        text = log.read_text(encoding="utf-8", errors="replace")
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        if wall and rss:
            seconds = sum(
                float(p) * 60**i for i, p in enumerate(reversed(wall.group(1).split(":")))
            )
            return out / "model.tar.gz", RunStats(seconds, int(rss.group(1)) / 1024)
    shutil.rmtree(out, ignore_errors=True)
    stats = timed(
        [
            str(RASA),
            "train",
            "--data",
            "nlu_data",
            "--config",
            str(config),
            "--domain",
            "domain.yml",
            "--out",
            str(out),
            "--fixed-model-name",
            "model",
        ],
        out / "train.log",
    )
    return out / "model.tar.gz", stats


def latency_ms(parser: RasaParser, texts: Sequence[str], rounds: int = 3) -> dict[str, float]:
    """Parse latency percentiles (in-process, so without HTTP), after one warm-up parse."""
    parser.parse(texts[0])
    samples = []
    for _ in range(rounds):
        for t in texts:
            started = time.perf_counter()
            parser.parse(t)
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50": samples[len(samples) // 2],
        "p95": samples[int(len(samples) * 0.95) - 1],
        "n": len(samples),
    }


# --------------------------------------------------------------------------- report


def fmt_row(name: str, r: dict[str, Any]) -> str:
    """One Markdown table row of the headline figures."""
    return (
        f"| {name} | {r['intent']['accuracy']:.3f} | {r['intent']['macro_f1']:.3f} | "
        f"{r['intent_with_fallback']['accuracy']:.3f} | {r['fallback_rate']:.3f} | "
        f"{r['crop']['f1']:.3f} | {r['pest_disease']['f1']:.3f} |"
    )


HEADER = (
    "| pipeline | intent acc | intent macro-F1 | acc, fallback = wrong | fallback rate "
    "| crop F1 | pest_disease F1 |\n|---|---|---|---|---|---|---|"
)


def render(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = [
        "# NLU benchmark report",
        "",
        f"Generated by `make nlu-report` ({report['generated']}). Training data: "
        f"{report['n_train']} examples, {report['k']}-fold stratified cross-validation "
        f"(seed {report['seed']}), the same folds for every pipeline and the baseline"
        f"{_partial(report)}. "
        f"Held-out: {report['n_heldout']} messages in tests/nlu/heldout.yml, never trained on.",
        "",
        f"Machine load (1/5/15-minute load average, 2 cores shared with other work): "
        f"{_load(report.get('load_start'))} at the start, {_load(report.get('load_end'))} at the "
        "end. Cross-validation results are cached per pipeline and data (var/nlu-exp/), so a "
        "pipeline's folds may have been trained by an earlier run on the same data.",
        "",
        "## Cross-validation",
        "",
        HEADER,
    ]
    for name, r in report["cv"].items():
        lines.append(fmt_row(name, r))
    lines.append(fmt_row("baseline: TF-IDF char 1-3 + logistic regression", report["baseline_cv"]))
    lines += ["", "## Held-out set (model trained on all training data)", "", HEADER]
    if "heldout" in report:
        lines.append(fmt_row(report["chosen"], report["heldout"]))
    lines.append(
        fmt_row("baseline: TF-IDF char 1-3 + logistic regression", report["baseline_heldout"])
    )
    if "cost" in report:
        c = report["cost"]
        lines += [
            "",
            "## Cost",
            "",
            f"- full `rasa train` (NLU + dialogue) of {report['chosen']}: "
            f"{c['train_s']:.0f} s wall, peak memory {c['peak_mb']:.0f} MB "
            "(`/usr/bin/time -v`, niced, 2 cores)",
            f"- parse latency in-process over {c['latency']['n']} parses of held-out messages: "
            f"p50 {c['latency']['p50']:.1f} ms, p95 {c['latency']['p95']:.1f} ms",
        ]
    lines += [
        "",
        "Intent figures take the classifier's best real intent; `acc, fallback = wrong` counts a "
        "message routed to `nlu_fallback` (the bot asks again) as an error. Entity F1 is over "
        "(message, value) pairs with values compared to the canonical name, as the contract "
        "requires (an alias left unmapped counts as wrong).",
    ]
    if "heldout" in report:
        lines += ["", "## Held-out errors", ""]
        lines += [f"- {e['text']} — {e['gold']} → {e['pred']}" for e in report["heldout_errors"]]
    return "\n".join(lines) + "\n"


def _partial(report: dict[str, Any]) -> str:
    used = report.get("folds_used", report["k"])
    if used >= report["k"]:
        return ""
    return (
        f" (**quick run: only the first {used} of the {report['k']} folds were trained and "
        f"scored**, {report.get('n_cv_scored', '?')} messages)"
    )


def _load(values: Sequence[float] | None) -> str:
    return " / ".join(f"{v:.1f}" for v in values) if values else "not recorded"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", action="append", type=Path, help="pipelines (default config.yml)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--max-folds",
        type=int,
        default=None,
        help="quick run: train and score only the first N of the --folds folds (the baseline too)",
    )
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-full", action="store_true", help="skip the full model (CV only)")
    ap.add_argument("--reuse-full", action="store_true", help="reuse var/nlu-exp/full if there")
    ap.add_argument("--no-cv", action="store_true", help="skip the pipelines' CV (full model only)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "nlu-report.md")
    args = ap.parse_args(argv)
    configs = args.config or [REPO / "config.yml"]
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("rasa", "absl", "tensorflow", "jieba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    examples = load_examples(TRAIN_FILES)
    heldout = load_examples([HELDOUT_FILE])
    splits = folds(examples, args.folds, args.seed)[: args.max_folds]
    report: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "load_start": os.getloadavg(),
        "n_train": len(examples),
        "n_heldout": len(heldout),
        "k": args.folds,
        "folds_used": len(splits),
        "seed": args.seed,
        "cv": {},
        "chosen": str(configs[0].relative_to(REPO) if configs[0].is_absolute() else configs[0]),
    }
    report["baseline_cv"] = baseline_cv(examples, splits)
    report["n_cv_scored"] = sum(len(test) for _, test in splits)
    report["baseline_heldout"] = score(
        heldout, Baseline().fit(examples).predict([e.text for e in heldout])
    )
    if not args.no_full:
        print(f"  full model of {configs[0]}: training", flush=True)
        model, stats = full_model(configs[0].resolve(), reuse=args.reuse_full)
        parser = RasaParser(model)
        preds = parser.predict([e.text for e in heldout])
        report["heldout"] = score(heldout, preds)
        report["heldout_errors"] = [
            {"text": e.text, "gold": e.intent, "pred": p.intent_no_fallback}
            for e, p in zip(heldout, preds, strict=True)
            if e.intent != p.intent_no_fallback
        ]
        report["cost"] = {
            "train_s": stats.seconds,
            "peak_mb": stats.peak_mb,
            "latency": latency_ms(parser, [e.text for e in heldout]),
        }
        parser.close()
    for config in [] if args.no_cv else configs:
        name = str(config)
        report["cv"][name] = cross_validate(config.resolve(), examples, splits)
        print(HEADER.splitlines()[0])
        print(fmt_row(name, report["cv"][name]), flush=True)
        write(report, args.out)  # after each pipeline: a long run leaves its figures so far
    report["load_end"] = os.getloadavg()
    write(report, args.out)
    print(render(report))
    return 0


def write(report: dict[str, Any], out: Path) -> None:
    """The Markdown report to `out`, everything as JSON to var/nlu-exp/report.json."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report), encoding="utf-8")
    EXP.mkdir(parents=True, exist_ok=True)
    (EXP / "report.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8"
    )


if __name__ == "__main__":
    sys.exit(main())
