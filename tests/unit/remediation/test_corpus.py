"""The corpus of tricky rows: `meterfix remediate` gives exactly the outputs recorded for it.

`tests/data/corpus/` holds inputs that exercise every rule, reason and bound the engine has
(timestamps in every unit, ISO text, skew, the past; values with separators, quotes,
exponents, NaN, a hundred-million-digit exponent; customer maps, case and trim; event-name
case, aliases and fuzzy matches; archived meters, value/customer/dimension keys; unknown
codes; missing, long, duplicate and earlier-generation identifiers; quoted commas, quotes,
line breaks, non-ASCII, control characters; rows with too few or too many fields; JSON Lines
and JSON arrays with nested payloads and broken lines; a file without error columns; a BOM +
semicolon file with header aliases), and `expected/<input>/` every file the engine wrote for it
plus its JSON summary, byte for byte. Any change of behaviour or of an output format shows up
here as a diff; a deliberate one is recorded by regenerating the expected files
(`MFX_CORPUS_REGENERATE=1 pytest tests/unit/remediation/test_corpus.py`) and reviewing the
diff in the commit. A new remediation core has to reproduce these files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.commands.remediate import remediate_command

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"
EXPECTED = CORPUS / "expected"
INPUTS = ("failed.csv", "failed.jsonl", "failed.json", "usage.csv", "semicolon.csv", "gen2.csv")
NOW = "1764000000"  # 2025-11-24T16:00:00Z
REGENERATE = os.environ.get("MFX_CORPUS_REGENERATE") == "1"


def _run(name: str, work: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    for path in CORPUS.iterdir():
        if path.is_file():
            shutil.copy(path, work / path.name)
    monkeypatch.chdir(work)  # relative paths: the summary and audit name the file as given
    for variable in ("MFX_RULES", "STRIPE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    args = [name, "--meters", "meters.json", "--rules", "rules.toml", "--now", NOW]
    args += ["--out", "out", "--json"]
    result = CliRunner().invoke(remediate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.output)
    return summary


@pytest.mark.parametrize("name", INPUTS)
def test_corpus_outputs_are_byte_identical(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = _run(name, tmp_path, monkeypatch)
    written = {path.name: path.read_bytes() for path in sorted((tmp_path / "out").iterdir())}
    summary_text = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    summary_text = summary_text.replace(str(tmp_path.resolve()), ".")  # outputs name full paths
    expected_dir = EXPECTED / name
    if REGENERATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir(parents=True)
        for file_name, content in written.items():
            (expected_dir / file_name).write_bytes(content)
        (expected_dir / "summary.json").write_text(summary_text)
    expected = {
        path.name: path.read_bytes()
        for path in sorted(expected_dir.iterdir())
        if path.name != "summary.json"
    }
    assert sorted(written) == sorted(expected)
    for file_name, content in expected.items():
        assert written[file_name].decode() == content.decode(), file_name
    assert summary_text == (expected_dir / "summary.json").read_text()


def test_corpus_covers_every_outcome() -> None:
    """The corpus keeps its teeth: corrected, quarantined and valid rows, every format."""
    totals = {"corrected": 0, "quarantined": 0, "valid": 0}
    codes: set[str] = set()
    for name in INPUTS:
        summary = json.loads((EXPECTED / name / "summary.json").read_text())
        for key in totals:
            totals[key] += summary[key]
        codes |= set(summary["by_code"])
    assert min(totals.values()) > 0
    assert {
        "timestamp_in_future",
        "timestamp_too_far_in_past",
        "meter_event_invalid_value",
        "meter_event_value_too_many_digits",
        "meter_event_value_not_found",
        "meter_event_no_customer_defined",
        "meter_event_customer_not_found",
        "no_meter",
        "archived_meter",
        "missing_dimension_payload_keys",
        "meter_event_dimension_count_too_high",
        "malformed_row",
        "odd_new_code",
    } <= codes
