"""The NLU inbox: real messages the model was unsure about, labelled into nlu_data/nlu/inbox.yml.

Labelled examples are annotated with the crop and pest/disease names of kb/names.yml (as the
curated data is), checked with Rasa's own YAML reader, and only then written. Never the held-out
test file.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bot.handoff_models import Case
from bot.knowledge import Names
from bot.models import Message

ROOT = Path(__file__).resolve().parents[2]
INBOX_FILE = ROOT / "nlu_data" / "nlu" / "inbox.yml"
HELDOUT = ROOT / "tests" / "nlu" / "heldout.yml"
THRESHOLD = 0.6
INTENT = re.compile(r"[a-z][a-z_]{1,63}")
_WRITE = threading.Lock()  # one read-modify-write of the file at a time in this process


class LabelError(ValueError):
    """A label that cannot be written (bad intent, empty text, invalid data)."""


@dataclass(frozen=True)
class InboxItem:
    """One farmer message worth a person's label."""

    id: int
    text: str
    intent: str | None
    confidence: float | None
    handed_off: bool


def inbox(*, session: Session, labelled: set[str], limit: int = 100) -> list[InboxItem]:
    """Inbound texts with low confidence or whose conversation went to a person, newest first."""
    handed = select(Case.conversation_id).where(Case.conversation_id.is_not(None))
    rows = session.execute(
        select(Message, Message.conversation_id.in_(handed))
        .where(
            Message.direction == "in",
            Message.msg_type == "text",
            Message.text.is_not(None),
            or_(Message.confidence < THRESHOLD, Message.conversation_id.in_(handed)),
        )
        .order_by(Message.id.desc())
        .limit(limit * 3)
    ).all()
    items, seen = [], set(labelled)
    for msg, was_handed in rows:
        text = " ".join((msg.text or "").split())
        if not text or text in seen:
            continue
        seen.add(text)
        items.append(InboxItem(msg.id, text, msg.intent, msg.confidence, bool(was_handed)))
    return items[:limit]


def annotate(text: str, names: Names) -> str:
    """`text` with the first crop and pest/disease name marked as Rasa entities."""
    out = text.replace("[", "").replace("]", "")
    for entity, table in (("crop", names.crops), ("pest_disease", names.pests)):
        forms = sorted({f for c, al in table.items() for f in (c, *al) if f}, key=len, reverse=True)
        for form in forms:
            at = out.find(form)
            # Not inside an annotation already made (「[猕猴桃](crop)」).
            if at >= 0 and "](" not in out[max(0, at - 1) : at + len(form) + 2]:
                out = f"{out[:at]}[{form}]({entity}){out[at + len(form) :]}"
                break
    return out


def _plain(example: str) -> str:
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", example)


def read_examples(path: Path = INBOX_FILE) -> dict[str, list[str]]:
    """intent → examples in the file (empty if there is none)."""
    if not path.exists():
        return {}
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {
        item["intent"]: [ln[2:].strip() for ln in item["examples"].splitlines() if ln.strip()]
        for item in doc.get("nlu", [])
    }


def labelled_texts(path: Path = INBOX_FILE) -> set[str]:
    """The plain texts already in the file (so the inbox does not offer them again)."""
    return {_plain(x) for xs in read_examples(path).values() for x in xs}


def render(examples: dict[str, list[str]]) -> str:
    """Rasa 3 YAML training data of these examples."""
    parts = ['version: "3.1"', "nlu:"]
    for intent in sorted(examples):
        parts += [f"- intent: {intent}", "  examples: |"]
        parts += [f"    - {x}" for x in examples[intent]]
    return "\n".join(parts) + "\n"


def validate(text: str) -> None:
    """Rasa's own reader must accept `text` (LabelError with its complaint otherwise)."""
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader

    try:
        data = RasaYAMLReader().reads(text)
    except Exception as exc:  # Rasa raises YamlException and friends
        raise LabelError(f"Rasa 不接受这些训练数据：{exc}") from None
    if not data.intent_examples:
        raise LabelError("没有训练样例")


def add_examples(
    intent: str, texts: list[str], known: set[str], names: Names, path: Path = INBOX_FILE
) -> int:
    """Append examples of `intent` (one of `known`) to `path`, validated; how many were new."""
    if path.resolve() == HELDOUT.resolve():
        raise LabelError("不能写入留出测试集")
    if not INTENT.fullmatch(intent) or intent not in known:
        raise LabelError(f"没有这个意图：{intent}")
    with _WRITE:
        return _append(intent, texts, names, path)


def _append(intent: str, texts: list[str], names: Names, path: Path) -> int:
    examples = read_examples(path)
    have = {_plain(x) for xs in examples.values() for x in xs}
    new = [annotate(t, names) for t in (" ".join(t.split()) for t in texts) if t]
    new = [x for x in new if _plain(x) not in have]
    if not new:
        return 0
    examples.setdefault(intent, []).extend(new)
    text = render(examples)
    validate(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return len(new)


def known_intents(domain: Path = ROOT / "domain.yml") -> set[str]:
    """The intents of the domain (labels must be one of them)."""
    doc = yaml.safe_load(domain.read_text(encoding="utf-8")) or {}
    return {i if isinstance(i, str) else next(iter(i)) for i in doc.get("intents", [])}
