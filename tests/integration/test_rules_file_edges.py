"""The rules file (MFX_RULES, `--rules`) at its edges: what a billing engineer writes by
mistake (a file saved in Latin-1 or with a BOM, a rule name as the audit shows it, a NaN or
a percentage where a ratio belongs, a customer id with a space) is one clear line at load
(the CLI exits non-zero, the worker refuses to start), never a traceback and never rows
billed under a rule the file meant to turn off. Each test failed on the code before its fix
(the docstrings say what happened)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediation.errors import BadRules
from remediation.rules import load_rules
from tests.integration.test_cli_remediate import meterfix
from tests.integration.test_cli_rule_edges import EXAMPLES, NOW, _jsonl, remediate
from tests.integration.test_worker_cli_edges import _file_env
from tests.integration.test_worker_process import _run as _cli


def _refused(tmp_path: Path, rules: bytes) -> str:
    """`meterfix remediate` with `rules` as the rules file: its stderr, once it was refused."""
    path = tmp_path / "rules.toml"
    path.write_bytes(rules)
    source = tmp_path / "usage.jsonl"
    source.write_text(_jsonl(_row("r1", "api_requests", "meter_event_customer_not_found")))
    proc = meterfix(
        "remediate",
        str(source),
        "--out",
        str(tmp_path / "out"),
        "--meters",
        str(EXAMPLES / "meters.json"),
        "--rules",
        str(path),
        "--now",
        NOW,
        cwd=tmp_path,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode != 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    return proc.stderr


def _row(identifier: str, event_name: str, code: str, **payload: object) -> dict[str, object]:
    return {
        "identifier": identifier,
        "timestamp": int(NOW),
        "event_name": event_name,
        "payload": {"stripe_customer_id": "cus_demo_alice", "value": 1, **payload},
        "error": {"code": code},
    }


# --- the file's encoding -------------------------------------------------------------------


def test_rules_file_not_in_utf8_is_one_line_naming_the_position(tmp_path: Path) -> None:
    """README: "Every command exits non-zero with one clear line on failure." A rules file
    saved as Latin-1 (an accented customer name, `café-7`) made `meterfix remediate --rules`
    die with a UnicodeDecodeError traceback: the file is decoded outside the error handling,
    which knew only OSError and bad TOML."""
    stderr = _refused(tmp_path, '[customers]\n"café-7" = "cus_demo_alice"\n'.encode("latin-1"))
    [line] = [line for line in stderr.splitlines() if line.strip()]
    assert "bad rules" in line and "not UTF-8" in line and "line 2" in line, line


def test_worker_refuses_to_start_on_rules_not_in_utf8(sqlite_url: str, tmp_path: Path) -> None:
    """The same Latin-1 rules file as MFX_RULES: `meterfix worker` died with a
    UnicodeDecodeError traceback instead of "cannot read the rules (...)": its start-up check
    caught OSError and remediation's errors only."""
    rules = tmp_path / "rules.toml"
    rules.write_bytes('[customers]\n"café-7" = "cus_demo_alice"\n'.encode("latin-1"))
    env = {**_file_env(tmp_path, sqlite_url), "MFX_RULES": str(rules)}
    result = _cli(["worker", "--once"], env, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != 0
    assert f"cannot read the rules ({rules})" in result.stderr and "not UTF-8" in result.stderr


def test_rules_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """A rules file saved by Notepad starts with a UTF-8 byte order mark. It was refused as
    "rules are not valid TOML: Invalid statement (at line 1, column 1)", a line in which
    nothing is wrong; the BOM is no part of the text and the file is read as written."""
    rules = '\ufeff[customers]\n"acme-42" = "cus_demo_alice"\n'
    row = _row("r1", "api_requests", "meter_event_customer_not_found")
    row["payload"] = {"stripe_customer_id": "acme-42", "value": 3}
    found = remediate(tmp_path, "usage.jsonl", _jsonl(row), rules=rules)
    [corrected] = found["corrected"]
    assert corrected["payload"] == {"stripe_customer_id": "cus_demo_alice", "value": 3}


# --- [policy] disabled_rules ---------------------------------------------------------------


def test_rounding_turned_off_by_its_audited_name_rounds_nothing(tmp_path: Path) -> None:
    """README: "every rule can be turned off in `[policy] disabled_rules`", and every
    correction is an audit line naming its rule. `disabled_rules = ["round_value"]`, the name
    the audit gives the rounding, was ignored: `1.5` was still rounded to `2` and re-sent, a
    billed value the file meant to leave alone. Turned off, the row is quarantined."""
    rules = (
        "[policy]\nround_too_many_digits = true\nvalue_precision = 0\n"
        'disabled_rules = ["round_value"]\n'
    )
    row = _row("r1", "api_requests", "meter_event_value_too_many_digits", value="1.5")
    found = remediate(tmp_path, "usage.jsonl", _jsonl(row), rules=rules)
    assert found["corrected"] == []
    assert [line["kind"] for line in found["audit"]] == ["quarantine", "summary"]
    [kept] = found["quarantine"]
    assert kept["payload"]["value"] == "1.5" and "round_value" in kept["mfx_reason"]


def test_a_misspelt_rule_to_turn_off_is_refused_at_load(tmp_path: Path) -> None:
    """A rule name that names no rule (`map_custmer`, or `timestamp_ms_to_s` where the switch
    is `timestamp_units`) was accepted and ignored: the rule the operator turned off went on
    correcting and re-sending rows. It is refused, naming the key, the name and the rules."""
    stderr = _refused(tmp_path, b'[policy]\ndisabled_rules = ["map_custmer"]\n')
    assert "disabled_rules" in stderr and "'map_custmer'" in stderr and "map_customer" in stderr
    with pytest.raises(BadRules, match=r"'timestamp_ms_to_s'.*timestamp_units"):
        load_rules('[policy]\ndisabled_rules = ["timestamp_ms_to_s"]\n')


def test_every_rule_the_engine_switches_on_can_be_turned_off() -> None:
    """The rule names the README's table and the audit use load, each on its own."""
    for name in ("map_customer", "trim_customer", "search_customer", "fuzzy_event_name"):
        assert not load_rules(f'[policy]\ndisabled_rules = ["{name}"]\n').enabled(name)


# --- [policy] numbers out of their range -----------------------------------------------------


@pytest.mark.parametrize(
    "setting", ["fuzzy_cutoff = nan", "fuzzy_cutoff = 80", "fuzzy_margin = -0.5"]
)
def test_fuzzy_bounds_outside_zero_to_one_are_refused(tmp_path: Path, setting: str) -> None:
    """README: `no_meter` is corrected only by a "clear fuzzy winner". `fuzzy_cutoff = nan`
    (TOML has it) passed every comparison: `zzzzq`, near no meter, was rerouted to
    `api_requests` and billed there; `80` (a percentage) or a negative margin were taken as
    well. A ratio outside 0 to 1 is refused at load, naming the key."""
    key = setting.split()[0]
    stderr = _refused(tmp_path, f"[policy]\n{setting}\n".encode())
    assert f"policy {key!r}" in stderr and "between 0 and 1" in stderr


@pytest.mark.parametrize("setting", ["future_skew_seconds = -3600", "customer_lookups = -1"])
def test_negative_counts_are_refused(tmp_path: Path, setting: str) -> None:
    """A skew of -3600 seconds (meant as "an hour back"?) was taken and clamped nothing; a
    negative number of customer look-ups would ask Stripe nothing. A count is 0 or more."""
    key = setting.split()[0]
    stderr = _refused(tmp_path, f"[policy]\n{setting}\n".encode())
    assert f"policy {key!r} must be 0 or more" in stderr


@pytest.mark.parametrize("customer", ["cus_demo alice", " cus_demo_alice", "cus_demo_alice\t"])
def test_customer_map_to_no_stripe_id_is_refused_at_load(tmp_path: Path, customer: str) -> None:
    """`[customers]` maps "external id -> Stripe customer id". `"acme" = "cus_demo alice"`
    (or with a leading space) was loaded, and every row of `acme` was corrected to that text
    and re-sent, to be refused by Stripe again under a new identifier; no Stripe id holds a
    space. Refused at load, naming the table and the key."""
    stderr = _refused(tmp_path, f'[customers]\n"acme" = {json.dumps(customer)}\n'.encode())
    assert "[customers] 'acme'" in stderr
