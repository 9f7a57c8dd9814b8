"""The import sets naming an object are found through their index, whatever the key's
length (the object a webhook names is text of any length; a PostgreSQL btree entry cannot
exceed about 2.7 kB, which is why the index is a hash one there)."""

from __future__ import annotations

import random
import string

from sqlmodel import Session

from service.db import make_engine
from service.jobs.store.reports import object_sources, stripe_files_of
from service.models import ImportSet


def _import_set(
    import_set_id: str, key: str, errors_file: str | None, status: str = "succeeded_with_errors"
) -> ImportSet:
    return ImportSet(
        import_set_id=import_set_id,
        status=status,
        source_object=key,
        errors_file_id=errors_file,
        source_file_id=f"copy_{import_set_id}",
    )


def test_the_stripe_files_of_of_an_objects_import_sets_whatever_its_key(
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
                # failed whole: its repair may read Stripe's copy (its run's source)
                _import_set("impset_7", "usage/day.csv", None, status="failed"),
            ]
        )
        session.commit()
    assert stripe_files_of(engine, ["usage/day.csv"]) == ["copy_impset_7", "file_a", "file_b"]
    assert stripe_files_of(engine, [long_key]) == ["file_d"]
    assert stripe_files_of(engine, []) == []
    # the key with and without the bucket's prefix (the connector names it relative to it)
    assert object_sources(engine, "usage/", "usage/other.csv") == [
        "usage/other.csv",
        "other.csv",
        "file_c",
    ]
    engine.dispose()
