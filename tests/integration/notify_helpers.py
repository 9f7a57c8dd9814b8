"""Real local servers and seed data for the notification tests: an SMTP server (aiosmtpd,
plain, STARTTLS or implicit TLS, with AUTH), a Slack incoming-webhook receiver, a
self-signed certificate, and a database holding one day of remediation activity."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine
from sqlmodel import Session

from service.models import QuarantinedRow, RemediationRun
from service.models.alerts import Alert
from service.models.inbox import InboxEvent
from service.notify.alerts import raise_alert
from tests.servers import free_port

SMTP_USER, SMTP_PASSWORD = "digest", "s3cret-pa55"


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Mailbox:
    """What the SMTP server received: (envelope sender, recipients, parsed message)."""

    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, over TLS)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            tls = session.ssl is not None or server.transport.get_extra_info("ssl_object")
            self.logins.append((SMTP_USER, bool(tls)))  # STARTTLS, or implicit TLS
        return AuthResult(success=ok)


@contextmanager
def smtp_server(
    *, starttls: Path | None = None, implicit_tls: Path | None = None
) -> Iterator[tuple[Mailbox, int]]:
    """An aiosmtpd server on a free loopback port (port=0 does not work with its Controller).
    `starttls`/`implicit_tls`: the directory holding cert.pem and key.pem."""
    mailbox = Mailbox()
    kwargs: dict[str, Any] = {"authenticator": mailbox.authenticate, "auth_require_tls": False}
    directory = starttls or implicit_tls
    if directory is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        if starttls is not None:
            kwargs |= {"tls_context": context, "require_starttls": True}
        else:
            kwargs["ssl_context"] = context
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def client_tls(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


class SlackReceiver:
    """A Slack incoming webhook: records every JSON body; `answers` scripts the replies
    (status line, headers) before it answers 200 "ok"; `gate` makes the first POST wait."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.answers: list[tuple[str, list[tuple[str, str]]]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length))
        with self._lock:
            self.bodies.append(body)
            self.times.append(time.monotonic())
            answer = self.answers.pop(0) if self.answers else ("200 OK", [])
            gate, self.gate = self.gate, None
        self.entered.set()
        if gate is not None:
            gate.wait(20)
        start_response(answer[0], [("Content-Type", "text/plain"), *answer[1]])
        return [b"ok" if answer[0].startswith("200") else b"error"]

    def texts(self) -> str:
        return json.dumps(self.bodies)


DAY = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)  # the digest window: Nov 29 (UTC)
NOW = DAY + dt.timedelta(days=1, minutes=5)


def seed_activity(engine: Engine, day: dt.datetime = DAY) -> dict[str, int]:
    """One day of activity in the window day..day+1d, and a smaller day before it."""
    with Session(engine) as session:
        before = _run("impset_before:file_b", day - dt.timedelta(hours=12), 5, 3, 2, 0)
        run = _run("import_set:impset_A:file_A", day + dt.timedelta(hours=9), 10, 4, 3, 3)
        run.by_code = {
            "meter_event_customer_not_found": {"corrected": 2, "quarantined": 2},
            "timestamp_in_future": {"corrected": 1, "quarantined": 1},
        }
        before.by_code = {"timestamp_in_future": {"corrected": 2, "quarantined": 0}}
        session.add_all([before, run])
        session.flush()
        assert run.id is not None
        for n, (code, customer, reason) in enumerate(
            [
                ("meter_event_customer_not_found", "acme-42", "No such customer: acme-42"),
                ("meter_event_customer_not_found", "acme-42", "No such customer: acme-42"),
                ("timestamp_in_future", "cus_Secret9", "timestamp 99999999999 too far ahead"),
            ]
        ):
            record = {"identifier": f"q{n}", "payload_stripe_customer_id": customer, "value": "7"}
            session.add(
                QuarantinedRow(
                    run_id=run.id,
                    source="in/a.csv",
                    row_number=n + 1,
                    identifier=f"q{n}",
                    code=code,
                    reason=reason,
                    meter="api_requests",
                    customer=customer,
                    record=record,
                    created_at=run.finished_at,
                )
            )
        session.add(
            Alert(
                alert_key="poller.gave_up:x",
                severity="critical",
                kind="poller.gave_up",
                subject="in/x.csv: the poller gave up",
                message="HTTP 500 for cus_Secret9",
                created_at=day + dt.timedelta(hours=10),
                last_seen_at=day + dt.timedelta(hours=10),
            )
        )
        session.add(
            InboxEvent(
                event_id="evt_dead_1",
                event_type="v1.billing.meter.error_report_triggered",
                style="thin",
                body="{}",
                status="dead",
                received_at=day + dt.timedelta(hours=2),
            )
        )
        session.commit()
        return {"run_id": run.id}


def _run(
    key: str, finished: dt.datetime, rows: int, valid: int, corrected: int, quarantined: int
) -> RemediationRun:
    return RemediationRun(
        run_key=key,
        trigger="import_set.succeeded",
        source=f"file_{key[-1]}",
        status="done",
        input_rows=rows,
        valid=valid,
        corrected=corrected,
        quarantined=quarantined,
        created_at=finished,
        finished_at=finished,
    )


def raise_gave_up(engine: Engine, **more: Any) -> None:
    """A critical alert: the poller gave up on `in/k.csv` (the incident raised in the tests
    of critical alerts' delivery)."""
    raise_alert(
        engine,
        key="poller.gave_up:k",
        severity="critical",
        kind="poller.gave_up",
        subject="in/k.csv: the poller gave up",
        message="HTTP 500",
        **more,
    )
