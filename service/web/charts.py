"""The overview's charts as SVG, drawn on the server by pygal (no script file, no outside
links): rows per hour or day by outcome, and rows per error code."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import ModuleType
from typing import Any

from service.notify.shown import shown_as_text

OUTCOME_COLOURS = ("#4c9a2a", "#e0a100", "#c0392b")  # valid, corrected, quarantined


def rows_chart(
    labels: Sequence[str],
    valid: Sequence[int],
    corrected: Sequence[int],
    quarantined: Sequence[int],
) -> str:
    return _rows_svg(tuple(labels), tuple(valid), tuple(corrected), tuple(quarantined))


def codes_chart(by_code: Mapping[str, Mapping[str, int]], top: int = 12) -> str:
    counts = tuple(
        (
            shown_as_text(code),
            by_code[code].get("corrected", 0),
            by_code[code].get("quarantined", 0),
        )
        for code in list(by_code)[:top]
    )
    return _codes_svg(counts)


# Drawing takes pygal 30-60 ms a chart; the same numbers give the same picture, so the last
# few are kept (the overview's data changes far less often than it is looked at).
@lru_cache(maxsize=16)
def _rows_svg(
    labels: tuple[str, ...],
    valid: tuple[int, ...],
    corrected: tuple[int, ...],
    quarantined: tuple[int, ...],
) -> str:
    pygal = _pygal()
    chart = pygal.StackedBar(
        title="Rows by outcome",
        x_label_rotation=30,
        show_minor_x_labels=False,
        **_settings(OUTCOME_COLOURS),
    )
    chart.x_labels = list(labels)
    # about 12 labels, counted back from the newest bucket (today, this hour), always shown
    chart.x_labels_major = list(labels[::-1][:: max(1, len(labels) // 12)])[::-1]
    totals = map(sum, zip(valid, corrected, quarantined, strict=True))
    chart.y_labels = whole_ticks(max(totals, default=0))
    chart.add("valid", list(valid))
    chart.add("corrected", list(corrected))
    chart.add("quarantined", list(quarantined))
    return _svg(chart)


@lru_cache(maxsize=16)
def _codes_svg(counts: tuple[tuple[str, int, int], ...]) -> str:
    settings = _settings(OUTCOME_COLOURS[1:])
    settings["height"] = 120 + 26 * max(len(counts), 1)
    chart = _pygal().HorizontalStackedBar(title="Rows by error code", **settings)
    chart.x_labels = [code for code, _, _ in counts]
    chart.y_labels = whole_ticks(max((c + q for _, c, q in counts), default=0))
    chart.add("corrected", [corrected for _, corrected, _ in counts])
    chart.add("quarantined", [quarantined for _, _, quarantined in counts])
    return _svg(chart)


def whole_ticks(most: int, about: int = 5) -> list[int]:
    """Ticks of a count of rows from 0 past `most`, about `about` of them, at a step of 1, 2
    or 5 times a power of ten (pygal's own put 0.2, 0.4, ... rows on a chart of 2)."""
    step = 1
    while most / step > about:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1, 2, 5, 10, 20, 50, ...
    return list(range(0, max(most, 1) + step, step))


def _settings(colours: Sequence[str]) -> dict[str, Any]:
    from pygal.style import Style

    style = Style(
        background="transparent",
        plot_background="transparent",
        foreground="#333",
        foreground_strong="#111",
        foreground_subtle="#888",
        colors=tuple(colours),
        font_family="system-ui, sans-serif",
    )
    return {
        "style": style,
        "js": [],  # pygal links a tooltip script from the web by default: none here
        "disable_xml_declaration": True,  # inlined in the page
        "legend_at_bottom": True,
        "width": 900,
        "height": 300,
    }


def _pygal() -> ModuleType:
    """pygal, imported on first use. Its import puts a finder for its map plugins on
    `sys.meta_path` that makes every later import it sees warn (ImportWarning: no find_spec);
    we use no map plugin, so the finder is taken off again."""
    import pygal

    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]
    module: ModuleType = pygal
    return module


def _svg(chart: Any) -> str:
    """The chart without the config script pygal always writes (read by its tooltip script,
    which we leave out): the pages' CSP allows no script. The script's text is escaped XML,
    so its first `</script>` ends it."""
    return _PYGAL_SCRIPT.sub("", str(chart.render(is_unicode=True)))


_PYGAL_SCRIPT = re.compile(r"<script[^>]*>.*?</script>", re.DOTALL)
