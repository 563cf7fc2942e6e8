"""Shared helpers for the NLU benchmarks and data tests: read Rasa NLU YAML without Rasa.

Reading the files directly keeps the data tests fast (no TensorFlow import) and lets the
benchmark split the very same examples into folds for DIET and for the baseline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TRAIN_FILES = sorted((REPO / "nlu_data" / "nlu").glob("*.yml"))
HELDOUT_FILE = REPO / "tests" / "nlu" / "heldout.yml"
CONSULT_INTENTS = (
    "ask_disease",
    "ask_pest",
    "ask_cultivation",
    "ask_fertilizer",
    "ask_pesticide_use",
    "ask_storage",
    "ask_livestock",
)
# `[surface](entity)` as Rasa writes entity annotations in training examples.
ANNOTATION = re.compile(r"\[([^\]]+)\]\(([a-z_]+)\)")


@dataclass(frozen=True)
class Entity:
    """An annotated entity: character span in the plain text, its type and surface text."""

    start: int
    end: int
    entity: str
    surface: str


@dataclass(frozen=True)
class Example:
    """One training or test message."""

    text: str
    intent: str
    entities: tuple[Entity, ...]
    raw: str  # the line as written, annotations included

    def values(self, entity: str) -> list[str]:
        """Surface forms annotated as `entity`, in order."""
        return [e.surface for e in self.entities if e.entity == entity]


def parse_annotated(line: str) -> tuple[str, tuple[Entity, ...]]:
    """Plain text and entity spans of one annotated example."""
    text_parts: list[str] = []
    entities: list[Entity] = []
    pos = 0
    length = 0
    for m in ANNOTATION.finditer(line):
        before = line[pos : m.start()]
        text_parts.append(before)
        length += len(before)
        surface = m.group(1)
        entities.append(Entity(length, length + len(surface), m.group(2), surface))
        text_parts.append(surface)
        length += len(surface)
        pos = m.end()
    text_parts.append(line[pos:])
    return "".join(text_parts), tuple(entities)


def load_examples(paths: Iterable[Path]) -> list[Example]:
    """Every intent example in `paths` (lookup tables and synonyms are skipped)."""
    out: list[Example] = []
    for path in paths:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for block in doc.get("nlu") or []:
            intent = block.get("intent")
            if not intent:
                continue
            for raw_line in str(block.get("examples") or "").splitlines():
                line = raw_line.strip()
                if not line.startswith("- "):
                    continue
                raw = line[2:].strip()
                text, entities = parse_annotated(raw)
                out.append(Example(text, str(intent), entities, raw))
    return out


def to_rasa_yaml(examples: Sequence[Example]) -> str:
    """Examples back as Rasa NLU YAML, grouped by intent (annotations kept)."""
    by_intent: dict[str, list[str]] = {}
    for ex in examples:
        by_intent.setdefault(ex.intent, []).append(ex.raw)
    lines = ['version: "3.1"', "nlu:"]
    for intent, raws in by_intent.items():
        lines.append(f"- intent: {intent}")
        lines.append("  examples: |")
        lines.extend(f"    - {r}" for r in raws)
    return "\n".join(lines) + "\n"
