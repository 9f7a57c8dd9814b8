"""Text from a usage file or a Stripe event as the dashboard writes it: characters a browser
obeys or hides instead of drawing are written as their code point, so what is shown is what
the value holds."""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

# Bidi controls (U+202E draws `report-\u202evsc.exe` as `report-exe.csv`, an executable shown
# as a CSV file), and control characters other than tab and line breaks.
_UNSEEN = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def shown_as_text(value: Any) -> Any:
    """Every value a dashboard template writes (the Jinja `finalize` hook), before escaping;
    markup is ours (the charts, the macros) and is left as it is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _UNSEEN.sub(lambda found: f"[U+{ord(found.group()):04X}]", value)
    return value
