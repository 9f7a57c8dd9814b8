"""The overview's charts read as counts of rows: whole-number ticks, and the newest bucket
(today, this hour) always labelled. Found by walking the README as a new user: the codes chart
ticked 0.2, 0.4, ... rows, and the day chart labelled every second day, leaving today's bar
beside yesterday's label."""

from __future__ import annotations

import re

from service.web.charts import codes_chart, rows_chart


def _texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def _numbers(svg: str) -> list[str]:
    """The value axis' tick labels: the numeric texts."""
    return [text for text in _texts(svg) if re.fullmatch(r"[\d.,]+", text)]


def test_the_codes_chart_ticks_whole_rows() -> None:
    svg = codes_chart({"no_meter": {"corrected": 1, "quarantined": 1}})
    ticks = _numbers(svg)
    assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks


def test_the_rows_chart_ticks_whole_rows_and_labels_the_newest_bucket() -> None:
    labels = [f"2026-11-{day:02d}" for day in range(6, 31)] + ["2026-12-01"]
    counts = [0] * (len(labels) - 1) + [3]
    svg = rows_chart(labels, counts, [0] * len(labels), [0] * len(labels))
    assert "2026-12-01" in _texts(svg)
    ticks = _numbers(svg)
    assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
