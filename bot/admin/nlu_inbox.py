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

from bot.farmer_data import mask_text
from bot.handoff_models import Case
from bot.knowledge import Names
from bot.models import Message

ROOT = Path(__file__).resolve().parents[2]
INBOX_FILE = ROOT / "nlu_data" / "nlu" / "inbox.yml"
HELDOUT = ROOT / "tests" / "nlu" / "heldout.yml"
THRESHOLD = 0.6
INTENT = re.compile(r"[a-z][a-z_]{1,63}")
# What an admin reads in the pages: the intent's meaning in Chinese (its name in brackets).
INTENT_LABELS = {
    "ask_disease": "病害",
    "ask_pest": "虫害",
    "ask_cultivation": "栽培管理/品种",
    "ask_fertilizer": "土壤肥料",
    "ask_pesticide_use": "农药使用",
    "ask_storage": "贮藏保鲜/采后",
    "ask_livestock": "畜禽水产",
    "request_human": "转人工",
    "greet": "打招呼",
    "goodbye": "再见",
    "thank": "感谢",
    "affirm": "肯定（是/对）",
    "deny": "否定（不是/不对）",
    "inform": "补充信息（作物、地点等）",
    "rate_service": "评分",
    "out_of_scope": "与农业无关",
    "stop": "不问了",
    "nlu_fallback": "没听懂",
}
AUTO = "auto"  # the crop: whichever the text names first (the default)
NO_CROP = ""  # the crop: none (the admin says the text names no crop)
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
    """Inbound texts with low confidence or whose conversation went to a person, newest first;
    phone and ID card numbers masked (they are shown to admins and may become training data)."""
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
        text = mask_text(" ".join((msg.text or "").split()))
        if not text or text in seen:
            continue
        seen.add(text)
        items.append(InboxItem(msg.id, text, msg.intent, msg.confidence, bool(was_handed)))
    return items[:limit]


def intent_label(intent: str | None) -> str:
    """「病害（ask_disease）」: the Chinese meaning first, the name for the curious."""
    if not intent:
        return "—"
    label = INTENT_LABELS.get(intent)
    return f"{label}（{intent}）" if label else intent


def _forms(table: dict[str, tuple[str, ...]], only: str | None = None) -> list[str]:
    """Names and aliases of the table (or of one canonical name), longest first."""
    return sorted(
        {f for c, al in table.items() if only is None or c == only for f in (c, *al) if f},
        key=len,
        reverse=True,
    )


def annotate(text: str, names: Names, crop: str = AUTO) -> str:
    """`text` with a crop and the first pest/disease name marked as Rasa entities.

    crop: AUTO marks the first crop name found; NO_CROP marks none (the admin says the text
    names no crop, whatever word looked like one); a canonical crop marks where the text names
    that crop (by its name or an alias), a LabelError if it does not.
    """
    out = text.replace("[", "").replace("]", "")
    if crop not in (AUTO, NO_CROP):
        if crop not in names.crops:
            raise LabelError(f"没有这个作物：{crop}")
        if not any(f in out for f in _forms(names.crops, crop)):
            raise LabelError(
                f"这条消息里没有提到「{crop}」（或它的别名），不能标成作物；"
                "消息里没写作物时请选「消息里没有作物」"
            )
    for entity, table in (("crop", names.crops), ("pest_disease", names.pests)):
        if entity == "crop" and crop == NO_CROP:
            continue
        only = crop if entity == "crop" and crop != AUTO else None
        for form in _forms(table, only):
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
    intent: str,
    texts: list[str],
    known: set[str],
    names: Names,
    path: Path = INBOX_FILE,
    crop: str = AUTO,
) -> int:
    """Append examples of `intent` (one of `known`) to `path`, validated; how many were new."""
    if path.resolve() == HELDOUT.resolve():
        raise LabelError("不能写入留出测试集")
    if not intent:
        raise LabelError("请选一个意图")
    if not INTENT.fullmatch(intent) or intent not in known:
        raise LabelError(f"没有这个意图：{intent}")
    if not any(t.strip() for t in texts):
        raise LabelError("请至少写一条问法")
    with _WRITE:
        return _append(intent, texts, names, path, crop)


def _append(intent: str, texts: list[str], names: Names, path: Path, crop: str) -> int:
    examples = read_examples(path)
    have = {_plain(x) for xs in examples.values() for x in xs}
    # Never a farmer's phone or ID card number in the training data (it is in the repo).
    new = [annotate(t, names, crop) for t in (mask_text(" ".join(t.split())) for t in texts) if t]
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
