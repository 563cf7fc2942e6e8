"""Pesticide safety: no card may recommend a banned pesticide, or a restricted one on a barred crop.

The list is `kb/banned_pesticides.yml` (the Ministry's 禁限用农药名录, dated). Only what a card
tells the farmer to do (its `control` measures) is checked, clause by clause; a clause that
warns against a product (「严禁使用甲胺磷」) is not a recommendation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from bot.knowledge import Card

ALL_CROPS = "所有农作物"
NEGATIONS = ("禁", "不得", "不要", "不能", "不可", "勿", "严禁", "切忌", "已禁用", "禁止", "别用")
CLAUSE = re.compile(r"[，。；;,！!？?\n]")


@dataclass(frozen=True)
class Product:
    """A banned or restricted active ingredient and the forms it is written in."""

    name: str
    forms: tuple[str, ...]
    barred_on: frozenset[str] | None  # None: banned on every crop


@dataclass(frozen=True)
class PesticideList:
    """The dated list and the crop groups its restrictions name."""

    as_of: str
    products: tuple[Product, ...]
    crop_groups: dict[str, frozenset[str]]
    pattern: re.Pattern[str]
    by_form: dict[str, Product]

    def mentions(self, text: str) -> list[Product]:
        """Products named in `text`; longest form first, so 乙酰甲胺磷 is not read as 甲胺磷."""
        return [self.by_form[m.group(0)] for m in self.pattern.finditer(text)]

    def barred(self, product: Product, crops: tuple[str, ...]) -> bool:
        """Whether `product` may not be used on any of `crops`."""
        if product.barred_on is None or ALL_CROPS in product.barred_on:
            return True
        for group in product.barred_on:
            members = self.crop_groups.get(group, frozenset()) | {group}
            if any(crop in members for crop in crops):
                return True
        return False


def _form_regex(form: str) -> str:
    # Bare numbers (1605, 3911) only as whole numbers, never inside dates or phone numbers.
    escaped = re.escape(form)
    return rf"(?<![0-9]){escaped}(?![0-9])" if form[:1].isdigit() else escaped


def parse_list(doc: dict[str, Any]) -> PesticideList:
    """Build the list from its YAML form."""
    products: list[Product] = []
    for entry in doc.get("banned") or []:
        forms = (str(entry["name"]), *(str(a) for a in entry.get("aliases") or []))
        products.append(Product(str(entry["name"]), forms, None))
    for entry in doc.get("restricted") or []:
        forms = (str(entry["name"]), *(str(a) for a in entry.get("aliases") or []))
        products.append(
            Product(str(entry["name"]), forms, frozenset(str(g) for g in entry["barred_on"]))
        )
    by_form = {form: p for p in products for form in p.forms if form}
    ordered = sorted(by_form, key=len, reverse=True)
    pattern = re.compile("|".join(_form_regex(f) for f in ordered))
    groups = {
        str(k): frozenset(str(c) for c in v or [])
        for k, v in (doc.get("crop_groups") or {}).items()
    }
    return PesticideList(str(doc.get("as_of", "")), tuple(products), groups, pattern, by_form)


@lru_cache(maxsize=4)
def load_list(path: Path) -> PesticideList:
    """The pesticide list at `path`, read once."""
    return parse_list(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def _warns_against(clause: str) -> bool:
    return any(n in clause for n in NEGATIONS)


def check_card(card: Card, plist: PesticideList) -> list[str]:
    """Why `card` is unsafe to publish (empty when it is safe)."""
    problems: list[str] = []
    for kind, items in card.control.items():
        for item in items:
            for clause in CLAUSE.split(item):
                if _warns_against(clause):
                    continue
                for product in plist.mentions(clause):
                    if product.barred_on is None:
                        problems.append(
                            f"{card.id}: recommends {product.name}, banned "
                            f"(禁限用农药名录 as of {plist.as_of}) — in control.{kind}: {clause}"
                        )
                    elif plist.barred(product, card.crops):
                        problems.append(
                            f"{card.id}: recommends {product.name} on {card.crop}, where it is "
                            f"barred ({'、'.join(sorted(product.barred_on))}) — in "
                            f"control.{kind}: {clause}"
                        )
    return problems
