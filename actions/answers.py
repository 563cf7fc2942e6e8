"""Pure functions that read farmers' answers to the consultation form's questions.

Farmers answer in many ways: 「周至」「我在眉县横渠镇」「汉中城固的」, 「一三八…」 in words, numbers
with spaces or full-width digits, 「没有」「没拍」「不留了」. Each reader returns the value to keep,
a sentinel for a declined optional answer, or None when it cannot tell (the form asks again).
"""

from __future__ import annotations

import re
import unicodedata

NONE_GIVEN = "无"  # an optional answer the farmer declined (no photo, no phone)
PHOTO_SENT = "已发（见服务记录）"  # the farmer says the photo went through as its own message
PHOTO_LATER = "稍后补发"
LOCATION_DECLINED = "未提供"

_NO = re.compile(
    r"^(?:没有|没得|莫得|没|无|不用|不要|不需要|不留|不发|不给|不方便|不了|没拍|拍不了|不会拍|"
    r"不会发|没照片|没有照片|没图|没电话|不想留|不想给|暂时不用|算了吧?|2|二|否|no)"
    r"(?:了|的|啊|呢|吧|哦)?$",
    re.IGNORECASE,
)
_SENT = re.compile(r"(?:发了|发过了|已发|已经发|刚发|传了|发给你了|上面|看图|照片在|图片在)")
_LATER = re.compile(r"(?:等下|等会|待会|一会|回头|晚点|明天|过会)")
_PLACE_SUFFIX = re.compile(r"(?:省|市|州|县|区|旗|镇|乡|村|街道|社区|组|坪|坝|沟|湾|岭)")
_PLACE_FILLER = re.compile(
    r"^(?:我们?(?:这里|这边|这|那里|那边)?(?:是|在)?|我家(?:在|是)?|俺(?:们)?(?:这)?(?:是|在)?|在|住在|家住)"
)
_PLACE_TAIL = re.compile(r"(?:的|人|这边|那边|这里|那里|这块|一带|附近)+$")
_NOT_A_PLACE = re.compile(
    r"(?:什么|啥|咋|怎么|为什么|吗|呢|病|虫|药|肥|叶|果|根|烂|黄|不知道|不晓得|忘了|\d)"
)
_DECLINE_PLACE = re.compile(r"^(?:不想说|不方便说|不告诉|保密|不说了?|不想讲)")
_NOT_A_CROP = re.compile(
    r"(?:^不|^没|什么|啥|咋|怎么|知道|晓得|吗|呢|病|虫|斑|点|烂|枯|死|黄了|发|有|上|了|药|肥)"
)
_CN_DIGITS = str.maketrans("零〇一二三四五六七八九幺两", "0012345678912")
_MOBILE = re.compile(r"1[3-9]\d{9}")
_LANDLINE = re.compile(r"0\d{2,3}\d{7,8}")


def normalize(text: str) -> str:
    """Full-width to half-width, trimmed, without trailing punctuation."""
    text = unicodedata.normalize("NFKC", text or "").strip()
    return text.strip(" 。.!！?？~～,，、")


def is_no(text: str) -> bool:
    """Whether the answer declines (「没有」「不用了」「2」)."""
    return bool(_NO.match(re.sub(r"\s+", "", normalize(text))))


def read_photo(text: str, media: str | None = None) -> str | None:
    """A photo reference: the media id the gateway passed, 'sent', 'later', declined, or None."""
    if media:
        return media
    t = normalize(text)
    if not t:
        return None
    if is_no(t) or t.startswith(("没有", "没拍", "不发")):
        return NONE_GIVEN
    if _SENT.search(t):
        return PHOTO_SENT
    if _LATER.search(t):
        return PHOTO_LATER
    return None


def read_location(text: str) -> str | None:
    """A county/township (「眉县横渠镇」, 「周至」, 「汉中城固」), a WeChat location note, a
    refusal to say (kept as such), or None."""
    t = re.sub(r"\s+", "", normalize(text))
    if t.startswith("位置：") or t.startswith("位置:"):
        return t.split("：", 1)[-1].split(":", 1)[-1] or None
    if _DECLINE_PLACE.match(t):
        return LOCATION_DECLINED
    t = _PLACE_TAIL.sub("", _PLACE_FILLER.sub("", t))
    if not t or _NOT_A_PLACE.search(t):
        return None
    if not re.fullmatch(r"[\u4e00-\u9fff]{2,16}", t):
        return None
    if _PLACE_SUFFIX.search(t) or len(t) <= 4:
        return t
    return None


def read_phone(text: str) -> str | None:
    """An 11-digit mobile or a landline, in digits; NONE_GIVEN when declined; else None."""
    t = normalize(text)
    if is_no(t) or re.search(r"(?:不留|不给|不想留|微信联系|微信上说|就在这里说)", t):
        return NONE_GIVEN
    digits = re.sub(r"[\s\-()（）]", "", t.translate(_CN_DIGITS))
    digits = re.sub(r"^(?:\+?86)", "", re.sub(r"[^\d+]", "", digits))
    if _MOBILE.fullmatch(digits) or _LANDLINE.fullmatch(digits):
        return digits
    found = _MOBILE.search(digits)
    return found.group(0) if found and len(digits) == 11 else None


def mask_phone(phone: str | None) -> str:
    """138****5678: enough for the farmer to recognise, not enough to leak."""
    if not phone or phone == NONE_GIVEN:
        return "不留"
    return phone[:3] + "*" * max(0, len(phone) - 7) + phone[-4:] if len(phone) > 7 else "***"


def read_problem(text: str) -> str | None:
    """The farmer's description of what is wrong, without 「转人工」-style words; None if empty."""
    t = normalize(text)
    t = re.sub(r"(?:转人工|人工服务|人工客服|找专家|转专家|要人工|人工)", " ", t)
    t = re.sub(r"^[\s，,。:：]*(?:我想问|请问|问一下|老师)?[\s，,。:：]*", "", t).strip()
    return t if len(re.sub(r"\W", "", t)) >= 3 else None


def read_crop(text: str, known: str | None) -> str | None:
    """The crop or animal: a known name (canonical) when there is one, else a short free answer
    (「烟叶」 is a crop the knowledge base lacks but a commissioner knows)."""
    if known:
        return known
    t = re.sub(r"\s+", "", normalize(text))
    t = re.sub(r"^(?:种的是|种的|养的是|养的|是|我种|我养|种)", "", t)
    t = re.sub(r"(?:的|呀|啊|哦|嘛)$", "", t)
    if is_no(t) or not re.fullmatch(r"[\u4e00-\u9fff]{1,6}", t or ""):
        return None
    # A description of the problem, a question or a refusal is not a crop.
    if _NOT_A_CROP.search(t):
        return None
    return t
