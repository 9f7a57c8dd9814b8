"""The import sets naming an object are found through their index, whatever the key's
length (the object a webhook names is text of any length; a PostgreSQL btree entry cannot
exceed about 2.7 kB, which is why the index is a hash one there)."""

from __future__ import annotations

import random
import string

from sqlmodel import Session

from service.db import make_engine
from service.jobs.store.reports import failed_records_files, object_sources
from service.models import ImportSet


def _import_set(import_set_id: str, key: str, errors_file: str | None) -> ImportSet:
    return ImportSet(
        import_set_id=import_set_id,
        status="succeeded_with_errors",
        source_object=key,
        errors_file_id=errors_file,
    )


def test_the_failed_records_files_of_an_objects_import_sets_whatever_its_key(
    db_url: str,
) -> None:
    engine = make_engine(db_url)
    rng = random.Random(7)  # letters that do not compress below the btree limit
    long_key = "usage/" + "".join(rng.choices(string.ascii_letters + string.digits, k=6000))
    with Session(engine) as session:
        session.add_all(
            [
                _import_set("impset_1", "usage/day.csv", "file_a"),
                _import_set("impset_2", "usage/day.csv", "file_b"),
                _import_set("impset_3", "usage/day.csv", None),  # no rows failed
                _import_set("impset_4", "usage/other.csv", "file_c"),
                _import_set("impset_5", long_key, "file_d"),
                _import_set("impset_6", long_key[:-1], "file_e"),
            ]
        )
        session.commit()
    assert failed_records_files(engine, ["usage/day.csv"]) == ["file_a", "file_b"]
    assert failed_records_files(engine, [long_key]) == ["file_d"]
    assert failed_records_files(engine, []) == []
    # the key with and without the bucket's prefix (the connector names it relative to it)
    assert object_sources(engine, "usage/", "usage/other.csv") == [
        "usage/other.csv",
        "other.csv",
        "file_c",
    ]
    engine.dispose()
