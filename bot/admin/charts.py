"""Charts as inline SVG strings (no script, no CDN): bars for counts and distributions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bot.console.pages import e

BAR_H, GAP, LABEL_W, WIDTH = 18, 6, 110, 520
# Minutes: the buckets the time charts use (upper bounds; the last is open).
TIME_BUCKETS: tuple[tuple[str, float], ...] = (
    ("≤30分", 30),
    ("≤2小时", 120),
    ("≤8小时", 480),
    ("≤1天", 1440),
    ("≤3天", 4320),
    (">3天", float("inf")),
)


def bars(chart_id: str, title: str, pairs: Sequence[tuple[str, float]], unit: str = "") -> str:
    """A horizontal bar chart of (label, value); an empty chart says 「暂无数据」."""
    if not pairs:
        return (
            f'<figure class="chart" id="{e(chart_id)}"><figcaption>{e(title)}</figcaption>'
            '<p class="muted">暂无数据</p></figure>'
        )
    top = max(v for _, v in pairs) or 1
    height = len(pairs) * (BAR_H + GAP) + GAP
    span = WIDTH - LABEL_W - 60
    parts = []
    for i, (label, value) in enumerate(pairs):
        y = GAP + i * (BAR_H + GAP)
        w = max(1.0, span * value / top) if value else 0
        shown = f"{value:g}{unit}"
        parts.append(
            f'<g class="bar" data-label="{e(label)}" data-value="{e(value)}">'
            f'<text x="{LABEL_W - 6}" y="{y + 13}" text-anchor="end">{e(label)}</text>'
            f'<rect x="{LABEL_W}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="#43a047">'
            f"<title>{e(label)}: {e(shown)}</title></rect>"
            f'<text x="{LABEL_W + w + 4:.1f}" y="{y + 13}">{e(shown)}</text></g>'
        )
    return (
        f'<figure class="chart" id="{e(chart_id)}"><figcaption>{e(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{e(title)}" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'font-size="12">{"".join(parts)}</svg></figure>'
    )


def bucket(values: Iterable[float]) -> list[tuple[str, float]]:
    """Durations in minutes counted into TIME_BUCKETS (every bucket shown, zeros included)."""
    counts = [0] * len(TIME_BUCKETS)
    for v in values:
        counts[next(i for i, (_, hi) in enumerate(TIME_BUCKETS) if v <= hi)] += 1
    return [(label, float(n)) for (label, _), n in zip(TIME_BUCKETS, counts, strict=True)]
