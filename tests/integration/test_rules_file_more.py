"""More of the rules file (MFX_RULES, `--rules`) at its edges, and `meterfix db upgrade` on a
database a newer release upgraded: a setting that would do nothing, or let through rows Stripe
refuses, is one clear line at load naming the key; never a file that loads and means
something else. Each test failed on the code before its fix (the docstrings say what
happened)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from remediation.errors import BadRules
from remediation.rules import load_rules
from service.db import make_engine
from service.db.migrate import upgrade
from tests.conftest import DB_PARAMS
from tests.integration.test_rules_file_edges import _refused
from tests.unit.test_migrations import _empty_database
from tests.unit.test_migrations_edges import MFX

# --- keys no table knows -------------------------------------------------------------------


@pytest.mark.parametrize("key", ["customers", "values", "customer_keys", "Customer"])
def test_a_misspelt_alias_list_is_refused_at_load(tmp_path: Path, key: str) -> None:
    """`[aliases]` takes `customer` and `value`. `customers = ["account"]` (or `values`, or the
    `Rules` field's name `customer_keys`) was loaded and ignored: the rows holding their
    customer under `account` were quarantined as if the file said nothing. Refused, naming the
    key, the table and the keys it takes."""
    stderr = _refused(tmp_path, f'[aliases]\n{key} = ["account"]\n'.encode())
    [line] = [line for line in stderr.splitlines() if line.strip()]
    assert f"[aliases] {key!r}" in line and "customer, value" in line, line


def test_the_alias_lists_it_takes_still_load() -> None:
    rules = load_rules('[aliases]\ncustomer = ["account"]\nvalue = ["n"]\n')
    assert (rules.customer_keys, rules.value_keys) == (("account",), ("n",))


# --- field limits past what Stripe accepts ---------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "most"),
    [
        ("max_identifier_chars = 101", 100),
        ("max_event_name_chars = 1000", 100),
        ("max_payload_key_chars = 101", 100),
        ("max_payload_value_chars = 500", 100),
        ("max_value_integer_digits = 21", 20),
        ("max_value_decimal_places = 13", 12),
        ("max_json_depth = 10000", 32),
    ],
)
def test_a_field_limit_past_stripes_is_refused_at_load(
    tmp_path: Path, setting: str, most: int
) -> None:
    """Validation holds every field to its limit so that no row Stripe refuses is sent.
    `max_identifier_chars = 101` (Stripe takes 100) and the others past their defaults (what
    Stripe is taken to accept) were loaded: a row over Stripe's limit was passed as valid,
    or "corrected" and sent, to be refused by Stripe. Refused, naming the key and the range."""
    key = setting.split()[0]
    stderr = _refused(tmp_path, f"[policy]\n{setting}\n".encode())
    [line] = [line for line in stderr.splitlines() if line.strip()]
    lowest = {"max_value_decimal_places": 0, "max_json_depth": 2}.get(key, 1)
    assert f"policy {key!r}" in line and f"at least {lowest} and at most {most}" in line, line


def test_field_limits_within_stripes_load() -> None:
    limits = load_rules(
        "[policy]\nmax_identifier_chars = 100\nmax_event_name_chars = 1\n"
        "max_value_decimal_places = 0\nmax_json_depth = 32\n"
    ).policy.limits
    assert (limits.max_identifier_chars, limits.max_event_name_chars) == (100, 1)
    assert (limits.max_value_decimal_places, limits.max_json_depth) == (0, 32)
    with pytest.raises(BadRules, match=r"'max_identifier_chars'.*at least 1 and at most 100"):
        load_rules("[policy]\nmax_identifier_chars = 0\n")


# --- [customers] mapping to nothing ----------------------------------------------------------


def test_a_customer_mapped_to_nothing_is_refused_at_load(tmp_path: Path) -> None:
    """`"ext-1" = ""` (a customer id not filled in yet) was loaded: every row of `ext-1` was
    "mapped", failed again for want of a customer and was quarantined, the file's mistake
    showing only as quarantined usage. Refused at load, naming the table and the key."""
    stderr = _refused(tmp_path, b'[customers]\n"acme-42" = "cus_demo_alice"\n"ext-1" = ""\n')
    [line] = [line for line in stderr.splitlines() if line.strip()]
    assert "[customers] 'ext-1'" in line and "empty" in line, line


@pytest.mark.parametrize("table", ["event_names", "meter_successors", "columns"])
def test_a_name_mapped_to_nothing_is_refused_at_load(tmp_path: Path, table: str) -> None:
    """`"api-call" = ""` under `[event_names]` (or a successor, or a column not filled in
    yet) loaded: an event renamed to "" failed again and was quarantined, a column renamed
    to "" became a column without a name. Refused at load, naming the table and the key."""
    stderr = _refused(tmp_path, f'[{table}]\n"api-call" = ""\n'.encode())
    [line] = [line for line in stderr.splitlines() if line.strip()]
    assert f"[{table}] 'api-call'" in line and "empty" in line, line


# --- `meterfix db upgrade` on a newer schema ---------------------------------------------------


@pytest.mark.parametrize("kind", DB_PARAMS)
def test_db_upgrade_of_a_database_a_newer_release_upgraded_says_so(
    kind: str, tmp_path: Path
) -> None:
    """README: "every command exits non-zero with one clear line on failure." A database
    stamped with a revision this code does not ship (a newer release ran `meterfix db
    upgrade`, then the deploy was rolled back) answered with Alembic's `CommandError: Can't
    locate revision identified by '0099_future'`, which says nothing of why or what to do.
    It names the revision, the newer release, and what to do; the database is left as it was."""
    for url in _empty_database(kind, tmp_path):
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MFX_", "DATABASE_URL"))}
        env |= {"DATABASE_URL": url, "LOG_LEVEL": "ERROR"}
        result = subprocess.run(
            [MFX, "db", "upgrade"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert "'0099_future'" in result.stderr and "newer meterfix release" in result.stderr
        assert "run that release" in result.stderr and "restore" in result.stderr
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalars().all() == ["0099_future"]
        engine.dispose()
