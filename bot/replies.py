"""What the bot says without asking Rasa: welcome, acknowledgements, menu answers, apologies.

Passive replies cannot carry buttons, so choices are offered as 「回复1/2/3」.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.models import Conversation, Message
from bot.wechat import Inbound

WELCOME = (
    "您好！我是科特派助手，帮您解答种植、养殖中的技术问题：病害、虫害、栽培、施肥、用药、贮藏、畜禽水产。\n"
    "直接打字告诉我是什么作物、哪里不对劲，例如「猕猴桃叶子上有褐色斑点怎么办」。\n"
    "想找专家（科技特派员）本人，回复「转人工」。"
)
ACK_SLOW = "已收到您的问题，正在查询，答案稍后发给您。"
# Rasa failed twice on a message (the farmer got APOLOGY or ACK_SLOW): a case was opened.
HANDED_OVER = "已收到，稍后由专家回复（求助#{case}）。有照片可以直接发过来。"
APOLOGY = "抱歉，系统暂时出了点问题。您的问题已记下，稍后给您回复；着急的话请回复「转人工」。"
NOT_UNDERSTOOD = "这个我没太明白。请说说是什么作物、出了什么问题，或回复「转人工」找专家。"
RATE_LIMITED = "您的消息我都收到了。请稍等片刻再发，我一条一条给您看。"
SCAN_BACK = "欢迎回来！直接打字说说您的问题，或回复「转人工」找专家。"
NON_TEXT_REPLIES = {
    "image": (
        "收到您的图片，已保存给专家看。"
        "请再打字说说是什么作物、哪里不对劲（比如叶子、果子、根），我好帮您查。"
    ),
    "voice": "这条语音没听清，已保存下来。请打字告诉我，或换个说法再说一遍。",
    "location": "收到您的位置，谢谢。请说说遇到了什么问题。",
    "link": "收到您分享的链接。请打字说说您想问什么。",
    "video": "收到您的视频，已记下。请再打字说说是什么作物、出了什么问题。",
    "shortvideo": "收到您的视频，已记下。请再打字说说是什么作物、出了什么问题。",
}
OTHER_REPLY = "收到。目前我只能看懂文字、图片和语音，请打字说说您的问题。"

# The account's custom menu (`ketepai wechat menu --apply`).
MENU_ASK_EXPERT = "KTP_ASK_EXPERT"
MENU_FAQ = "KTP_FAQ"
MENU_MY_CASES = "KTP_MY_CASES"
MENU: dict[str, Any] = {
    "button": [
        {"type": "click", "name": "问专家", "key": MENU_ASK_EXPERT},
        {"type": "click", "name": "常见问题", "key": MENU_FAQ},
        {"type": "click", "name": "我的求助", "key": MENU_MY_CASES},
    ]
}
ASK_EXPERT = (
    "请直接打字描述问题：什么作物（或畜禽）、哪里不对劲、多久了、用过什么药，能拍照更好。\n"
    "要找科技特派员本人，回复「转人工」。"
)
FAQ = (
    "常见问题，回复数字或直接提问：\n"
    "回复1 病害（叶斑、烂果、冻害）\n"
    "回复2 虫害（蚜虫、菜青虫、红蜘蛛）\n"
    "回复3 用药（剂量、混用、安全间隔期）"
)
NO_CASES = "您还没有求助记录。直接打字说说您的问题吧。"
CATEGORY_NAMES = {
    "disease": "病害",
    "pest": "虫害",
    "cultivation": "栽培管理",
    "fertilizer": "土壤肥料",
    "pesticide_use": "农药使用",
    "storage": "贮藏保鲜",
    "livestock": "畜禽水产",
}


def canned_reply(inbound: Inbound) -> str | None:
    """The fixed reply for a message or event, or None when Rasa or the database must answer."""
    kind = inbound.msg_type
    if kind in {"event:subscribe", "event:subscribe_scan"}:
        return WELCOME
    if kind == "event:scan":
        return SCAN_BACK
    if kind == "event:click":
        if inbound.event_key == MENU_ASK_EXPERT:
            return ASK_EXPERT
        if inbound.event_key == MENU_FAQ:
            return FAQ
        if inbound.event_key == MENU_MY_CASES:
            return None  # needs the farmer's records
        return NOT_UNDERSTOOD
    if kind.startswith("event:"):
        return ""  # unsubscribe, menu links, location reports: nothing to say
    return NON_TEXT_REPLIES.get(kind, OTHER_REPLY)


def my_cases(session: Session, openid: str, limit: int = 3) -> str:
    """「我的求助」: the farmer's latest service records, newest first."""
    rows = session.execute(
        select(Conversation, func.count(Message.id))
        .join(Message, Message.conversation_id == Conversation.id)
        .where(
            Conversation.openid == openid,
            Message.direction == "in",
            Message.msg_type.notlike("event:%"),
        )
        .group_by(Conversation.id)
        .order_by(Conversation.last_activity_at.desc())
        .limit(limit)
    ).all()
    if not rows:
        return NO_CASES
    lines = ["您最近的求助："]
    for n, (conv, count) in enumerate(rows, 1):
        what = " ".join(x for x in (conv.crop, CATEGORY_NAMES.get(conv.category or "", "")) if x)
        lines.append(f"{n}. {conv.started_at:%m月%d日} {what or '咨询'}（{count} 条消息）")
    lines.append("接着问请直接打字；找专家回复「转人工」。")
    return "\n".join(lines)
