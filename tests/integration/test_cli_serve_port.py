"""`meterfix serve` on a port it cannot listen on: README says every command exits non-zero
with one clear line on failure. It printed the dashboard's address and where its token is (a
server that never started), then two lines, werkzeug's "Address already in use" and "Port …
is in use by another program. Either identify and stop that program, or start the server with
a different port."; now one line, and nothing announced."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port

MFX = str(Path(sys.executable).parent / "meterfix")


def _serve(tmp_path: Path, sqlite_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
    env.update(DATABASE_URL=sqlite_url, BUCKET_URL=f"file://{tmp_path / 'bucket'}")
    return subprocess.run(
        [MFX, "serve", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def _not_logs(stderr: str) -> list[str]:
    """stderr's lines but the structured log lines (JSON objects)."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def test_serve_on_a_port_in_use_exits_with_one_line(sqlite_url: str, tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _serve(tmp_path, sqlite_url, "--port", str(port))
    assert result.returncode == 1 and result.stdout == ""
    assert _not_logs(result.stderr) == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use (another program "
        "holds that port: stop it, or start the server with another --port)"
    ]


def test_serve_on_an_address_not_of_this_machine_exits_with_one_line(
    sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    result = _serve(tmp_path, sqlite_url, "--port", str(port), "--host", "192.0.2.1")
    assert result.returncode == 1
    assert _not_logs(result.stderr) == [
        f"Error: cannot listen on 192.0.2.1:{port}: Cannot assign requested address"
    ]
