"""Who gets a case: pure functions over the roster, the case and the clock (no database).

Order: on duty, specialty and county all match → least load; else the county pool (anyone on
duty in the county) → least load; else an admin. Escalation offers an unclaimed case to the next
person by the same order, never to someone already offered it, and finally to an admin.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# Industries as the programme's reports name them, and the crops (canonical names) in each.
# kb/names.yml `groups` (蔬菜 → ...) are merged in by the caller.
INDUSTRIES: dict[str, tuple[str, ...]] = {
    "果树": ("猕猴桃", "核桃", "柑橘", "梨", "苹果"),
    "水果": ("猕猴桃", "柑橘", "梨", "苹果"),
    "果蔬": ("猕猴桃", "柑橘", "梨", "苹果", "蔬菜"),
    "粮油": ("水稻", "小麦", "玉米", "油菜", "马铃薯", "甘薯", "大豆"),
    "畜禽": ("生猪", "鸡", "牛", "羊"),
    "畜牧": ("生猪", "鸡", "牛", "羊"),
    "畜禽水产": ("生猪", "鸡", "牛", "羊", "鱼"),
    "水产": ("鱼",),
    "中药材": ("天麻", "黄连", "党参", "中药材"),
    "特色山珍": ("核桃", "食用菌"),
    "茶叶": ("茶叶",),
}
# Specialties that are about a kind of problem rather than a crop.
CATEGORY_SPECIALTIES: dict[str, tuple[str, ...]] = {
    "植保": ("disease", "pest", "pesticide_use"),
    "土肥": ("fertilizer",),
    "栽培": ("cultivation",),
    "采后": ("storage",),
    "贮藏保鲜": ("storage",),
    "兽医": ("livestock",),
    "畜牧兽医": ("livestock",),
    "畜禽": ("livestock",),
}


@dataclass(frozen=True)
class Candidate:
    """One commissioner as routing sees them."""

    id: int
    county: str
    specialties: tuple[str, ...]
    on_duty: bool  # already combined with the weekly schedule (see on_duty_now)
    load: int = 0  # open cases they hold or are offered


@dataclass(frozen=True)
class CaseFacts:
    """What routing needs to know about a case."""

    crop: str | None = None
    category: str | None = None
    county: str | None = None


@dataclass(frozen=True)
class Decision:
    """Where a case goes: a commissioner (by id), or an admin when `commissioner_id` is None."""

    commissioner_id: int | None
    reason: str  # "specialty+county", "county pool", "admin"


ADMIN = Decision(None, "admin")


def on_duty_now(on_duty: bool, schedule: Collection[int] | None, now: datetime) -> bool:
    """On duty today: the on-duty switch, and today's ISO weekday in the schedule (if any)."""
    return on_duty and (not schedule or now.isoweekday() in schedule)


def industries_of(crop: str, groups: Mapping[str, Iterable[str]] | None = None) -> set[str]:
    """Every industry or group a crop belongs to (猕猴桃 → 果树, 水果, 果蔬)."""
    tables: dict[str, set[str]] = {k: set(v) for k, v in INDUSTRIES.items()}
    for name, members in (groups or {}).items():
        tables.setdefault(name, set()).update(members)
    found = {name for name, members in tables.items() if crop in members}
    # A group of a group: 番茄 is in 蔬菜, and 蔬菜 is in 果蔬.
    found |= {name for name, members in tables.items() if members & found}
    return found


def matches(
    specialties: Iterable[str],
    facts: CaseFacts,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> bool:
    """Whether a commissioner's specialties cover the case's crop, its industry or its category."""
    wanted: set[str] = set()
    if facts.crop:
        wanted = {facts.crop, *industries_of(facts.crop, groups)}
    for spec in specialties:
        if spec in wanted:
            return True
        if facts.category and facts.category in CATEGORY_SPECIALTIES.get(spec, ()):
            return True
    return False


def _least_loaded(people: list[Candidate]) -> Candidate | None:
    return min(people, key=lambda c: (c.load, c.id)) if people else None


def route(
    facts: CaseFacts,
    roster: Iterable[Candidate],
    *,
    exclude: Collection[int] = (),
    groups: Mapping[str, Iterable[str]] | None = None,
) -> Decision:
    """The commissioner who should get the case, or an admin; `exclude` were offered it before."""
    on_duty = [c for c in roster if c.on_duty and c.id not in exclude]
    in_county = [c for c in on_duty if not facts.county or c.county == facts.county]
    best = _least_loaded([c for c in in_county if matches(c.specialties, facts, groups)])
    if best is not None:
        return Decision(best.id, "specialty+county" if facts.county else "specialty")
    pool = _least_loaded(in_county)
    if pool is not None:
        return Decision(pool.id, "county pool" if facts.county else "pool")
    return ADMIN


def escalation_due(offered_at: datetime | None, now: datetime, after: timedelta) -> bool:
    """Whether a waiting case offered at `offered_at` has waited long enough to move on."""
    return offered_at is not None and now - offered_at >= after
