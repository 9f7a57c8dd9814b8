"""Run keys fit their column (512 characters) whatever ids an event carries."""

from __future__ import annotations

from service.jobs.store.runs import RUN_KEY_CHARS, import_set_run_key, report_run_key
from service.web.lineage import run_input


def test_an_import_set_run_key_of_long_ids_fits_its_column_and_stays_distinct() -> None:
    """Ids are held to 255 characters each: `import_set:<id>:<file id>` of two such ids ran to
    522 characters, and PostgreSQL refused the run (its rows never remediated)."""
    impset = "impset_" + "i" * 248
    keys = {import_set_run_key(impset, "file_" + "f" * 249 + tail) for tail in ("a", "b")}
    assert len(keys) == 2 and all(len(key) <= RUN_KEY_CHARS for key in keys)
    assert all(key.startswith(f"import_set:{impset}:sha256:") for key in keys)
    assert import_set_run_key("impset_1", "file_1") == "import_set:impset_1:file_1"  # as before
    found = run_input(min(keys), "file_" + "f" * 249 + "a")
    assert found == {
        "type": "import_set",
        "import_set_id": impset,
        "file": "file_" + "f" * 249 + "a",
    }


def test_an_error_report_run_key_of_a_long_object_key_fits_its_column() -> None:
    key = "usage/" + "k" * 1000 + ".csv"
    run_key = report_run_key("evt_1", key)
    assert len(run_key) <= RUN_KEY_CHARS and run_key.startswith("error_report:evt_1:sha256:")
