"""`ketepai kb import-pestdb`: a pest/disease database (dasinong schema) into the knowledge base.

Every pest/disease × crop record becomes a card with its control measures, marked imported and
unreviewed, with its source. Cards stay drafts unless `publish`, which publishes only those that
pass the pesticide safety check; the rest stay drafts, flagged with the reason. Re-running updates
cards in place (ids are `<source>-<pestdisasterid>`), never duplicates them.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from bot.kb_models import KbCard
from bot.kb_sqldump import Value, read_table
from bot.kb_store import UpsertCounts, upsert_cards
from bot.knowledge import KB_DIR, Card, Names, load_names
from bot.safety import PesticideList, check_card, load_list

CATEGORY = {"病害": "disease", "虫害": "pest"}
UNREVIEWED = "unreviewed"
# Leading words of a measure that say which kind it is (the dump's own headings).
KIND_WORDS = (
    ("biological", ("生物",)),
    ("physical", ("物理",)),
    ("chemical", ("药剂", "化学", "种子消毒", "种子处理")),
    ("cultural", ("农业", "栽培", "检疫", "植物检疫", "选用", "因地制宜")),
)
TAG = re.compile(r"\[[^\]]{1,8}\]|<[^>]+>")


@dataclass
class ImportResult:
    """What an import did."""

    cards: int
    published: int
    unsafe: int
    counts: UpsertCounts


def measure_kind(text: str, chemical_flag: Value) -> str:
    """Which of cultural/physical/biological/chemical a measure is."""
    head = text.lstrip("①②③④⑤0123456789.、（）() ")[:6]
    for kind, words in KIND_WORDS:
        if any(head.startswith(w) for w in words):
            return kind
    return "chemical" if chemical_flag == 1 else "cultural"


def _clean(text: Value) -> str:
    return re.sub(r"\s+", " ", TAG.sub("", str(text or ""))).strip()


def _topic(pestname: str, crop: str) -> str:
    # 「草莓褐斑病」 on 草莓 reads 「草莓 · 褐斑病」; a bare crop name stays whole.
    if pestname.startswith(crop) and len(pestname) > len(crop) + 1:
        return pestname[len(crop) :].lstrip("(（")
    return pestname


def _crop(raw: str, names: Names) -> str:
    for form in (raw, raw.removesuffix("树")):
        canonical = names.canonical_crop(form)
        if canonical:
            return canonical
    return raw


def _summary(crop: str, topic: str, symptoms: str, cause: str) -> str:
    text = re.split(r"[。；]", symptoms or cause or "")[0].strip()
    if len(text) > 60:
        text = text[:58] + "…"
    return (
        f"{crop}{topic}：{text}" if text else f"{crop}{topic}（资料未写症状，请对照图片或转人工）"
    )


def build_cards(
    pest_rows: Iterable[tuple[Value, ...]],
    solution_rows: Iterable[tuple[Value, ...]],
    names: Names,
    source: str,
    label: str,
) -> list[Card]:
    """One card per pest/disease × crop record, with its measures in the house order."""
    measures: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for _sid, text, _crop_name, pid, chem in solution_rows:
        clean = _clean(text)
        if clean and isinstance(pid, int):
            measures[pid][measure_kind(clean, chem)].append(clean)
    cards = []
    for pid, kind, pestname, alias, crop_raw, area, color in pest_rows:
        crop = _crop(_clean(crop_raw), names)
        name = _clean(pestname)
        topic = _topic(name, crop)
        aliases = [a for a in re.split(r"[、，,；;。\s]+", _clean(alias)) if a and a != topic]
        if name != topic:
            aliases.insert(0, name)
        cause = _clean(area).removeprefix("发生规律").strip()
        symptoms = _clean(color)
        flags = [UNREVIEWED]
        if not (symptoms or cause) or not measures.get(int(str(pid))):
            flags.append("incomplete")
        cards.append(
            Card(
                id=f"{source}-{pid}",
                crop=crop,
                crops=(crop,),
                category=CATEGORY.get(str(kind), "disease"),
                topic=topic,
                aliases=tuple(dict.fromkeys(aliases)),
                summary=_summary(crop, topic, symptoms, cause),
                symptoms=symptoms,
                cause=cause,
                control={k: tuple(v) for k, v in measures.get(int(str(pid)), {}).items()},
                source=f"{label}（导入，未经专家审核；记录 {pid}）",
                status="draft",
                origin=f"pestdb:{source}",
                flags=tuple(flags),
            )
        )
    return cards


def decide(card: Card, plist: PesticideList, publish: bool, current: str | None) -> Card:
    """The card with its status and flags after the safety check."""
    problems = check_card(card, plist)
    flags = [*card.flags, *(f"unsafe: {p}" for p in problems)]
    if problems or "incomplete" in flags:
        status = "retired" if current == "retired" else "draft"
    elif publish or current == "published":
        status = "retired" if current == "retired" else "published"
    else:
        status = current or "draft"
    return Card(**{**card.__dict__, "status": status, "flags": tuple(flags)})


def import_pestdb(
    session: Session,
    pest_sql: Path,
    solution_sql: Path,
    *,
    publish: bool = False,
    source: str = "dasinong",
    kb_dir: Path = KB_DIR,
    progress: bool = True,
) -> ImportResult:
    """Import both dumps into the session's database (the caller commits)."""
    names = load_names(kb_dir)
    plist = load_list(kb_dir / "banned_pesticides.yml")
    label = f"{source} 病虫害库 {pest_sql.name}/{solution_sql.name}"
    cards = build_cards(
        read_table(pest_sql, "pestdisaster"),
        read_table(solution_sql, "solution"),
        names,
        source,
        label,
    )
    current = dict(
        session.execute(
            select(KbCard.id, KbCard.status).where(KbCard.origin == f"pestdb:{source}")
        ).all()
    )
    counts = UpsertCounts()
    published = unsafe = 0
    bar = tqdm(total=len(cards), unit="card", disable=not progress, file=sys.stderr)
    for start in range(0, len(cards), 500):
        chunk = [decide(c, plist, publish, current.get(c.id)) for c in cards[start : start + 500]]
        published += sum(c.status == "published" for c in chunk)
        unsafe += sum(any(f.startswith("unsafe") for f in c.flags) for c in chunk)
        upsert_cards(session, [(c, c.id.rsplit("-", 1)[1]) for c in chunk], counts)
        bar.update(len(chunk))
    bar.close()
    return ImportResult(len(cards), published, unsafe, counts)
