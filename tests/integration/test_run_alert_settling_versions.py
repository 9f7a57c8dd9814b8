"""A run's alert (`run:<run key>`) resolved when runs over later versions of its object take
its quarantined row, with Stripe's S3 connector importing the bucket (MFX_POLLER=off): the
run of a version that Stripe refused the row from again marks the first run's row taken
again (`object_runs.HandledElsewhere`, `mark_refused_again`), and the repair of a version
that fails whole marks the row a version took since, fixed by hand
(`object_versions.TakenBefore`, `mark_taken_again`); each tells the first run's alert.
Real parts: moto S3, the sandbox (Stripe and its connector), the worker; SQLite and
PostgreSQL."""

from __future__ import annotations

import time

from sqlmodel import Session, select

from service.models import Alert
from tests.integration.test_billing_safety import rerun
from tests.integration.test_e2e import BUCKET, Loop, render
from tests.integration.test_refused_again_off_mode import (  # noqa: F401 (`loop`: a fixture)
    KEY,
    _first_version,
    _held,
    _import_set_ids,
    _poll,
    _put,
    _rows,
    _second_version,
    loop,
)


def _alert(running: Loop, key: str) -> Alert:
    with Session(running.engine) as session:
        return session.exec(select(Alert).where(Alert.alert_key == key)).one()


def _first_run_alert(running: Loop) -> tuple[str, str]:
    """The key of the alert of import set 1's run (x1 quarantined), open; its subject."""
    [(identifier, _, taken, run_key)] = _held(running)
    assert (identifier, taken) == ("x1", None)
    alert = _alert(running, f"run:{run_key}")
    assert alert.status == "open" and alert.subject.endswith("1 row quarantined"), alert.subject
    return alert.alert_key, alert.subject


def test_a_row_refused_again_from_a_new_version_resolves_the_first_run_s_alert(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """x1's value is no number in both versions: import set 2's run quarantines it anew and
    marks import set 1's row taken again (refused again from version 2). Import set 1's
    alert, its only row taken, is resolved saying so; import set 2's run has its own."""
    now = _first_version(loop, {"value": "abc"})
    key, subject = _first_run_alert(loop)
    _second_version(loop, now, {"value": "xyz"})
    _, second = _import_set_ids(loop)
    [old, new] = _held(loop)
    assert old[2] is not None and new[2] is None, (old, new)
    alert = _alert(loop, key)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject == f"{subject}; taken again"
    assert alert.message.endswith(
        "\nTaken again since: its quarantined row, by a later version of their file or "
        "another take (1 row, marked); none waiting."
    ), alert.message
    assert _alert(loop, f"run:{new[3]}").status == "open"
    assert new[3].split(":")[1] == second


def test_a_row_fixed_by_hand_and_taken_before_a_version_fails_whole_resolves_its_alert(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """x1, quarantined from version 1, was fixed by hand in version 2, which the connector
    took (x1 billed); version 3, written with `;`, fails whole. Its repair leaves x1 out and
    marks version 1's row taken again, by version 2: import set 1's alert is resolved."""
    now = _first_version(loop, {"value": "abc"})
    key, subject = _first_run_alert(loop)
    _put(loop, _rows(now, {"value": "5"}))
    assert _poll(loop)["data"]["object"]["result"]["errors"]["row_count"] == 1  # c1 only
    loop.drain()  # c1 left out: import set 1's run corrected it
    assert _alert(loop, key).status == "open"  # x1 taken by version 2: not known yet
    time.sleep(1.1)
    body = render(_rows(now, {"value": "5"}, "n1"), "csv", ";")
    loop.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    assert _poll(loop)["type"] == "data_management.import_set.failed"
    loop.drain()
    [(identifier, _, taken, _)] = _held(loop)
    assert identifier == "x1" and taken is not None
    alert = _alert(loop, key)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject == f"{subject}; taken again"
    assert alert.message.endswith(
        "\nTaken again since: its quarantined row, by a later version of their file or "
        "another take (1 row, marked); none waiting."
    ), alert.message


def test_a_rerun_leaving_a_row_a_later_version_holds_resolves_the_run_s_alert(
    loop: Loop,  # noqa: F811 (the fixture imported above)
) -> None:
    """x1 (no number) quarantined from version 1; the customer fixes it by hand and uploads
    the file again, which Stripe's connector takes whole. A quarantine re-run leaves x1, taken
    again from the later version (re-run, it would be billed twice), marked so at its pick:
    nothing of the first run waits, its alert is resolved."""
    now = _first_version(loop, {"value": "abc"})
    key, subject = _first_run_alert(loop)
    _put(loop, _rows(now, {"value": "5"}))  # not polled by the connector yet
    rerun(loop)
    [(identifier, _, taken, _)] = _held(loop)
    assert identifier == "x1" and str(taken).startswith(f"{KEY} (ETag "), taken
    alert = _alert(loop, key)
    assert (alert.status, alert.count) == ("resolved", 1)
    assert alert.subject == f"{subject}; taken again"
