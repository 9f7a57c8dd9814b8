"""Slow clients against the web: a webhook body dripped a byte at a time is refused at its
deadline (408), and the Procfile's production server keeps answering beside a few clients
sending their headers or bodies slowly (two of them stopped its two sync workers: webhooks,
the dashboard and the health checks all went unanswered for as long as they liked)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests
from flask import Flask

import service.intake.webhooks
from service.config import Settings
from tests.servers import free_port, serve_wsgi

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _drip(port: int, head: bytes, body: bytes, every: float, stop: threading.Event) -> bytes:
    """Send `head` a byte at a time, then `body` the same way, `every` seconds apart, until
    done or `stop`; what the server answered (b"" if nothing)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.05)
        answer = b""
        for byte in head + body:
            if stop.is_set():
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            with suppress(TimeoutError):
                answer += sock.recv(4096)
            if answer:
                break
            time.sleep(every)
        return answer


def test_a_webhook_body_dripped_past_its_deadline_is_refused(
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service.intake.webhooks, "BODY_SECONDS", 1.0)
    app = make_app(make_settings(stripe_webhook_secrets="whsec_test_slow"))
    with serve_wsgi(app) as server:
        head = (
            b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Stripe-Signature: t=1,v1=ab\r\nContent-Length: 1000\r\n\r\n"
        )
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(head)
        sock.settimeout(0.2)
        answer = b""
        while not answer and time.monotonic() - started < 15:
            try:
                sock.sendall(b"{")  # a byte every 0.2 s: 1000 of them would take 200 s
                answer = sock.recv(4096)
            except TimeoutError:
                continue
        sock.settimeout(2)
        with suppress(OSError):  # the rest of the answer (its body may come on its own)
            while more := sock.recv(4096):
                answer += more
        sock.close()
    elapsed = time.monotonic() - started
    status, _, rest = answer.partition(b"\r\n")
    assert status.split()[1:2] == [b"408"], answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2].decode())
    assert body == {"error": "body not received within 1 s"}
    assert elapsed < 8  # a loaded machine's margin; before, no answer at all


@contextmanager
def _procfile_web(tmp_path: Path) -> Iterator[int]:
    """The Procfile's `web` line as it is, on a free port, against a migrated SQLite."""
    [line] = [x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:")]
    port = free_port()
    command = line.partition(":")[2].strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_", "DIGEST_"))}
    env |= {
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'meterfix.db'}",
        "BUCKET_URL": f"file://{tmp_path / 'bucket'}",
        "MFX_WORK_DIR": str(tmp_path / "work"),
        "LOG_LEVEL": "ERROR",
    }
    subprocess.run([BIN / "meterfix", "db", "upgrade"], env=env, cwd=tmp_path, check=True)
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], env=env, cwd=tmp_path, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.RequestException:
                assert proc.poll() is None and time.monotonic() < deadline, "web did not start"
                time.sleep(0.2)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_procfile_web_answers_beside_slow_clients(tmp_path: Path) -> None:
    with _procfile_web(tmp_path) as port:
        stop = threading.Event()
        slow_body = (
            b"POST /webhooks HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1,v1=ab\r\n"
            b"Content-Length: 1000\r\n\r\n",
            b"{" * 1000,
        )
        slow_head = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200, b"")
        clients = [
            threading.Thread(target=_drip, args=(port, *shape, 0.5, stop), daemon=True)
            for shape in (slow_body, slow_head) * 3
        ]
        for client in clients:
            client.start()
        time.sleep(1.5)  # every slow client connected and holding on
        try:
            started = time.monotonic()
            answered = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=20)
            took = time.monotonic() - started
        finally:
            stop.set()
        assert answered.status_code == 200 and took < 8, took  # before: no answer
