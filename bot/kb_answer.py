"""What to say for a retrieval result: answer, ask which of two problems, or hand to a person.

Pure functions; the actions call them and the benchmarks measure them. Reply numbering is fixed
so that digits never mean two things at once (see kb/README.md, "Dialogue protocol"):
after an answer 1 = helpful, 2 = not solved, 3 = full control measures; after a clarifying
question 1 and 2 pick one of the two problems offered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.kb_search import Candidate, Result
from bot.knowledge import CONTROL_LABELS, CONTROL_ORDER, Card

# Confidence (calibrated: about the chance the top card is right) at or above which we answer,
# and at or above which we ask a clarifying question instead of handing over.
# Chosen with bench/kb_calibrate.py (5-fold cross-validated over the 589 dev questions): at 0.65
# the out-of-fold precision is 0.938 with 73.7 % answered; the lowest set is dev_questions.yml
# (0.907, it holds the hard off-topic questions). Dev figures are optimistic (the cards were
# worded looking at them): the margin above 0.90 is kept for the held-out set.
ANSWER_AT = 0.65
CLARIFY_AT = 0.3
# The reranker's own probability for the top card must reach this too: the calibrated confidence
# leans on the question's category matching the card's, and a card with little text in common
# with the question must not be answered on that alone. CV over the dev sets: 0.3 is neutral
# (0.940 precision / 73.3 % answered at 0.65, against 0.938 / 73.7 % without); 0.4 costs two
# points answered, 0.5 six.
ANSWER_MIN_P = 0.3
# A card offered as the second choice of a clarifying question must be plausible on its own:
# its text meets the question beyond generic words (its name, or BM25 evidence), and the
# reranker gives it at least this share of the first choice's probability. Otherwise the farmer
# would be asked to choose between the likely card and a filler (a kiwifruit question about
# birds pecking fruit was offered 冷库烂果 / 疏果 because both merely mention 果子).
RUNNER_UP_SHARE = 0.1
RUNNER_UP_BODY = 0.05
FEEDBACK_PROMPT = "这个回答有帮助吗？回复1有用，2没解决，3看完整防治方法"
NOT_SURE = (
    "这个问题我还答不准，不想乱说误了您的事。\n"
    "请补充一下作物、哪个部位、什么样子；或回复「转人工」，请科技特派员专家回答。"
)
HANDOFF_OFFER = "抱歉没帮上忙。回复「转人工」，请科技特派员专家看看；也可以发张照片说说症状。"
THANKS = "谢谢反馈！还有别的问题随时问我。"
UNREVIEWED_NOTE = "（此条来自导入资料，尚未经专家审核，仅供参考）"


@dataclass(frozen=True)
class Decision:
    """answer (one card), clarify (two cards to choose from) or none (hand over)."""

    kind: str
    cards: tuple[Card, ...] = ()
    confidence: float = 0.0


def decide(
    result: Result, answer_at: float = ANSWER_AT, clarify_at: float = CLARIFY_AT
) -> Decision:
    """Answer when sure, ask between the top two distinct problems when half sure, else none."""
    best = result.best
    if best is None or result.confidence < clarify_at:
        return Decision("none", confidence=result.confidence)
    if result.confidence >= answer_at and best.p >= ANSWER_MIN_P:
        return Decision("answer", (best.card,), result.confidence)
    other = _runner_up(result.candidates)
    if other is None:
        return Decision("none", confidence=result.confidence)
    return Decision("clarify", (best.card, other.card), result.confidence)


def _runner_up(candidates: tuple[Candidate, ...]) -> Candidate | None:
    first = candidates[0]
    for c in candidates[1:]:
        # Only a real alternative: another problem, with evidence of its own and a fair chance.
        if (
            c.card.topic != first.card.topic
            and (c.name > 0 or c.body > RUNNER_UP_BODY)
            and c.p >= RUNNER_UP_SHARE * first.p
        ):
            return c
    return None


def _short(text: str, limit: int = 16) -> str:
    """The first clause of `text`, at most `limit` characters."""
    first = re.split(r"[。；，,;！!？?\n]", text.strip())[0].strip()
    return first if len(first) <= limit else first[: limit - 1] + "…"


def measures(card: Card) -> list[str]:
    """Every control measure, labelled, in the house order."""
    return [
        f"{CONTROL_LABELS[kind]}：{item}"
        for kind in CONTROL_ORDER
        for item in card.control.get(kind, ())
    ]


def render_summary(card: Card) -> str:
    """The first reply: title (crop and problem), the summary, the first steps, the prompt."""
    lines = [f"【{card.title}】", card.summary]
    if card.origin != "curated":
        lines.append(UNREVIEWED_NOTE)
    first = [f"{i}) {_short(m.split('：', 1)[1], 30)}" for i, m in enumerate(measures(card)[:2], 1)]
    if first:
        lines.append("先做：" + "；".join(first))
    lines.append("")
    lines.append(FEEDBACK_PROMPT)
    return "\n".join(lines)


def render_details(card: Card, max_chars: int = 600) -> str:
    """The full measures (reply 3): numbered, cut to fit a phone screen or two."""
    lines = [f"【{card.title} · 防治方法】"]
    for i, m in enumerate(measures(card), 1):
        line = f"{i}. {m}"
        if sum(len(x) for x in lines) + len(line) > max_chars:
            lines.append("……更多内容请回复「转人工」向专家索取。")
            break
        lines.append(line)
    if len(lines) == 1:
        lines.append("这张卡片没有具体防治措施，请回复「转人工」问专家。")
    if card.season:
        lines.append(f"时机：{_short(card.season, 40)}")
    lines.append("")
    lines.append("这个回答有帮助吗？回复1有用，2没解决")
    return "\n".join(lines)


def describe(card: Card) -> str:
    """A few words a farmer can recognise the problem by."""
    return _short(card.symptoms or card.summary, 14)


def render_clarify(cards: tuple[Card, ...], crop: str | None = None) -> str:
    """「是叶子上有斑点，还是果实烂？」 built from the two candidates, about the farmer's crop
    when known (a card may hold for several crops: 「猕猴桃、柑橘、梨、苹果 · 鸟害」)."""
    a, b = cards[:2]
    if not crop:
        crop = a.crop if a.crop == b.crop else f"{a.crop}/{b.crop}"
    return (
        f"想确认一下您的{crop}是哪种情况：\n"
        f"回复1：{a.topic}（{describe(a)}）\n"
        f"回复2：{b.topic}（{describe(b)}）\n"
        "都不像的话，请再说说哪个部位、什么样子。"
    )
