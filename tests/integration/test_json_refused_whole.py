"""A refused JSON row is kept whole, as a JSON Lines line or as a JSON array element, through
the real CLI (`meterfix remediate`), held to the README. The test failed on the code before
its fix (the docstring says what went wrong)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli_rule_edges import remediate

NOTE = "n" * 1100  # a free-text field: "a row's other fields are written as they came"
ERROR = '"error":{"code":"meter_event_invalid_value","message":"rejected"}'
REFUSED = {
    "nan": (
        '{"identifier":"a1","timestamp":1763996400,"event_name":"api_requests",'
        '"payload":{"stripe_customer_id":"cus_1","value":NaN},"note":"' + NOTE + '",' + ERROR + "}"
    ),
    "duplicate-key": (
        '{"identifier":"a1","timestamp":1763996400,"event_name":"api_requests",'
        '"payload":{"stripe_customer_id":"cus_1","value":1,"value":2},"note":"'
        + NOTE
        + '",'
        + ERROR
        + "}"
    ),
}
GOOD = (
    '{"identifier":"g1","timestamp":1763996400,"event_name":"api_requests",'
    '"payload":{"stripe_customer_id":"cus_1","value":"1,234"},' + ERROR + "}"
)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_refused_json_array_element_is_quarantined_whole_as_a_json_line_is(
    tmp_path: Path, kind: str
) -> None:
    """README, "Bounded input": a number JSON does not have (`NaN`, ...) -- "the line or
    element is quarantined as written"; an element refused is "one quarantined
    `malformed_row`, as a JSON Lines line is"; "Nothing lost"; and the same rows as JSON
    Lines or a JSON array are decided alike.

    What happens: as a JSON Lines line, the refused row (NaN, or a key named twice) is
    quarantined whole in `raw`. The very same text as an element of a JSON array is
    quarantined cut to its first 1,024 characters (`jsonreaders.RAW_KEPT`): the rest of the
    row (here its long `note`, its error) is gone from the quarantine file, although the
    element was read whole (it is far below the 16 MiB element bound)."""
    element = REFUSED[kind]
    assert len(element) > 1024
    lines = remediate(tmp_path, "rows.jsonl", GOOD + "\n" + element + "\n")
    array = remediate(tmp_path, "rows.json", "[\n" + GOOD + ",\n" + element + "\n]\n")
    (from_lines,) = lines["quarantine"]
    (from_array,) = array["quarantine"]
    assert from_lines["raw"] == element  # JSON Lines: the line as written
    assert from_array["mfx_code"] == "malformed_row"
    assert from_array["raw"] == element, (
        f"array element quarantined cut to {len(from_array['raw'])} of {len(element)} characters"
    )
