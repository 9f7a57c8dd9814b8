"""The notify room's store of critical-message claims (`critical_messages`: a row per alert,
phase and channel, deleted with its alert): claiming a message before it is sent, marking
how its send went, and reading which channels an incident told. `critical_send.py` claims
and marks through here; the alerts themselves are in `store.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, case, select, update

from service.db.statements import insert_or_ignore
from service.models._types import table_of
from service.models.alerts import Alert, CriticalMessage, MessageStatus

ALERTS = table_of(Alert)  # read only: is the alert still the incident a claim is for
MESSAGES = table_of(CriticalMessage)


@dataclass(frozen=True)
class MessageClaim:
    """What claiming a message on one channel found: `ours` (send it), else the status
    another sender left it in (None: the alert is another incident now); `resent`: ours, a
    claim left `sending` past its time taken over (its sender stopped mid-send: the message
    may arrive twice); `made_unsure`: such a claim, already taken over once, marked unsure."""

    ours: bool
    status: str | None
    made_unsure: bool = False
    resent: bool = False


# A message that may have arrived (its sender stopped mid-send, or its send went out without
# an answer) is sent once more (it may arrive twice: an alert that may never have arrived is
# worse), then no more. `resends` counts them for the incident: a claim of it with resends
# may have arrived, whatever its status (one resent then refused for sure is `failed`).
MAX_RESENDS = 1
MAY_HAVE_ARRIVED = "it may have arrived (its sender stopped mid-send, or had no answer)"


def claim_message(
    engine: Engine,
    alert: Mapping[str, Any],
    phase: str,
    channel: str,
    claimant: str,
    *,
    now: datetime,
    stale_before: datetime,
) -> MessageClaim:
    """Claim the `phase` message of the incident `alert` on `channel` for `claimant`: a new
    row, the row of an earlier incident, or one whose send failed; one statement each, so
    of two senders one only has it. A claim left `sending` since before `stale_before` (its
    sender stopped mid-send), or whose send ended without an answer (`mark_unanswered`), is
    taken over once (`MAX_RESENDS`), then marked unsure: it may have arrived, and a sender
    dying on every send, or a server never answering, must not have it sent without end."""
    key = _message(alert, phase, channel)
    incident = alert["created_at"]
    claim = {"incident_at": incident, "status": MessageStatus.SENDING.value, "claimed_by": claimant}
    claim |= {"claimed_at": now, "finished_at": None, "last_error": None}
    free = (MESSAGES.c.incident_at < incident) | (
        (MESSAGES.c.incident_at == incident) & (MESSAGES.c.status == MessageStatus.FAILED)
    )
    this_incident = key & (MESSAGES.c.incident_at == incident)
    stale = (MESSAGES.c.status == MessageStatus.SENDING) & (
        (MESSAGES.c.claimed_at < stale_before) | MESSAGES.c.finished_at.is_not(None)
    )
    with engine.begin() as connection:
        if not _current_incident(connection, alert):
            return MessageClaim(False, None)
        if _insert_claim(connection, alert, phase, channel, claim):
            return MessageClaim(True, MessageStatus.SENDING)
        # the resends of this incident's message are kept: a failed try does not undo a
        # send that may have arrived (reset, a third sender dying mid-send sent it again)
        resends = case((MESSAGES.c.incident_at < incident, 0), else_=MESSAGES.c.resends)
        taken = update(MESSAGES).where(key & free).values(**claim, resends=resends)
        if connection.execute(taken).rowcount:
            return MessageClaim(True, MessageStatus.SENDING)
        again = claim | {"last_error": f"sent again: {MAY_HAVE_ARRIVED}"}
        resend = this_incident & stale & (MESSAGES.c.resends < MAX_RESENDS)
        taken = update(MESSAGES).where(resend).values(**again, resends=MESSAGES.c.resends + 1)
        if connection.execute(taken).rowcount:
            return MessageClaim(True, MessageStatus.SENDING, resent=True)
        made_unsure = _mark_stale(connection, this_incident & stale, now)
        status = connection.execute(select(MESSAGES.c.status).where(this_incident)).scalar()
    return MessageClaim(False, None if status is None else str(status), made_unsure)


def _message(alert: Mapping[str, Any], phase: str, channel: str) -> ColumnElement[bool]:
    row = MESSAGES.c
    where: ColumnElement[bool] = row.alert_id == alert["id"]
    return where & (row.phase == phase) & (row.channel == channel)


def _current_incident(connection: Connection, alert: Mapping[str, Any]) -> bool:
    where = (ALERTS.c.id == alert["id"]) & (ALERTS.c.created_at == alert["created_at"])
    return connection.execute(select(ALERTS.c.id).where(where)).first() is not None


def _insert_claim(
    connection: Connection,
    alert: Mapping[str, Any],
    phase: str,
    channel: str,
    claim: Mapping[str, Any],
) -> bool:
    inserted = connection.execute(
        insert_or_ignore(connection.dialect.name, MESSAGES, ["alert_id", "phase", "channel"])
        .values(alert_id=alert["id"], phase=phase, channel=channel, **claim)
        .returning(MESSAGES.c.id)  # rowcount is -1 here on PostgreSQL
    ).first()
    return inserted is not None


def _mark_stale(connection: Connection, where: ColumnElement[bool], now: datetime) -> bool:
    reason = (
        f"its sender stopped mid-send or had no answer, and {MAX_RESENDS} more time: it may "
        "have arrived, so it is not sent again"
    )
    values = {"status": MessageStatus.UNSURE.value, "finished_at": now, "last_error": reason}
    return bool(connection.execute(update(MESSAGES).where(where).values(**values)).rowcount)


def mark_message(
    engine: Engine,
    alert: Mapping[str, Any],
    phase: str,
    channel: str,
    claimant: str,
    *,
    status: MessageStatus,
    now: datetime,
    error: str | None = None,
) -> None:
    """How `claimant`'s send of its claimed message went; only while the claim is still its
    own and `sending` (one marked unsure meanwhile stays so)."""
    own = (MESSAGES.c.claimed_by == claimant) & (MESSAGES.c.status == MessageStatus.SENDING)
    values = {"status": status.value, "finished_at": now, "last_error": error}
    with engine.begin() as connection:
        connection.execute(
            update(MESSAGES).where(_message(alert, phase, channel) & own).values(**values)
        )


def mark_unanswered(
    engine: Engine,
    alert: Mapping[str, Any],
    phase: str,
    channel: str,
    claimant: str,
    *,
    now: datetime,
    error: str,
) -> str | None:
    """`claimant`'s send of its claimed message went out without an answer: it may have
    arrived. The claim stays `sending`, its send over (`finished_at`): the next claim sends it
    once more (`claim_message`); a message already sent again (`resends`) is marked unsure,
    never sent again. The status it was left in (None: the claim is no longer its own)."""
    own = (MESSAGES.c.claimed_by == claimant) & (MESSAGES.c.status == MessageStatus.SENDING)
    where = _message(alert, phase, channel) & own
    again = MESSAGES.c.resends < MAX_RESENDS
    status = case((again, MessageStatus.SENDING.value), else_=MessageStatus.UNSURE.value)
    with engine.begin() as connection:
        values = {"status": status, "finished_at": now, "last_error": error}
        if not connection.execute(update(MESSAGES).where(where).values(**values)).rowcount:
            return None
        mark = select(MESSAGES.c.status).where(_message(alert, phase, channel))
        return str(connection.execute(mark).scalar_one())


def resume_claim(
    engine: Engine,
    alert: Mapping[str, Any],
    phase: str,
    channel: str,
    claimant: str,
    *,
    now: datetime,
) -> bool:
    """`claimant` takes its claim back for its send's next try, after marking it failed for
    the wait before (`mark_message`): `sending` again, dated `now` (the send's next tries
    and its mark fit in `STALE_CLAIM` from here, however long the wait and its database
    writes took). False when it is no longer its own (another sender claimed the failed
    message meanwhile: it sends it; or the incident, resolved, closed it: `close_unsent`)."""
    own = (MESSAGES.c.claimed_by == claimant) & MESSAGES.c.status.in_(
        [MessageStatus.FAILED.value, MessageStatus.SENDING.value]
    )
    values = {"status": MessageStatus.SENDING.value, "finished_at": None, "claimed_at": now}
    with engine.begin() as connection:
        where = _message(alert, phase, channel) & own
        return bool(connection.execute(update(MESSAGES).where(where).values(**values)).rowcount)


@dataclass(frozen=True)
class Told:
    """Which channels had the incident's message (`sent`) and which may have (`maybe`: in
    flight, or a send of it went out without an answer or was cut off: `sending`, `unsure`,
    or any claim with resends)."""

    sent: frozenset[str]
    maybe: frozenset[str]


def close_unsent(engine: Engine, alert: Mapping[str, Any], phase: str, now: datetime) -> Told:
    """The incident `alert` is over before its `phase` message went everywhere: its claims
    that failed are given up (one statement: a sender between its tries, whose claim says
    failed, then sends nothing more, `resume_claim`), and what the claims say of who was
    told is read in the same transaction."""
    where = _incident_messages(alert, phase)
    reason = "not sent: the incident was over first"
    closed = {"status": MessageStatus.GIVEN_UP.value, "finished_at": now, "last_error": reason}
    failed = where & (MESSAGES.c.status == MessageStatus.FAILED)
    with engine.begin() as connection:
        connection.execute(update(MESSAGES).where(failed).values(**closed))
        return _told(connection, where)


def told_by_claims(engine: Engine, alert: Mapping[str, Any], phase: str) -> Told:
    """What the claims of the incident `alert`'s `phase` message say of who was told."""
    with engine.connect() as connection:
        return _told(connection, _incident_messages(alert, phase))


def _incident_messages(alert: Mapping[str, Any], phase: str) -> ColumnElement[bool]:
    where: ColumnElement[bool] = MESSAGES.c.alert_id == alert["id"]
    where &= (MESSAGES.c.phase == phase) & (MESSAGES.c.incident_at == alert["created_at"])
    return where


def _told(connection: Connection, where: ColumnElement[bool]) -> Told:
    query = select(MESSAGES.c.channel, MESSAGES.c.status, MESSAGES.c.resends).where(where)
    rows = connection.execute(query).all()
    in_flight = (MessageStatus.SENDING, MessageStatus.UNSURE)
    sent = {str(r.channel) for r in rows if r.status == MessageStatus.SENT}
    maybe = {str(r.channel) for r in rows if r.status in in_flight or r.resends > 0}
    return Told(frozenset(sent), frozenset(maybe - sent))
