"""`meterfix worker` runs as two processes: a small supervisor and the worker it restarts.

The worker process ends itself when an item overruns its time limit (the only way to end a
stuck thread, see `service.worker.liveness`), and the watchdog ends it when an item holds
the interpreter; the supervisor starts a fresh one at once (exit code 75) or after a short,
growing delay (any other unexpected exit), so `make run` and a bare `meterfix worker` keep a
worker without a process manager. SIGTERM/SIGINT to the supervisor stop the worker (it hands
its item back) and, past a grace period, kill it. The worker dies with its supervisor, even
a SIGKILLed one (Linux: PR_SET_PDEATHSIG; elsewhere it watches its parent's pid).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from service.logs import log_event

SUPERVISOR_ENV = "METERFIX_SUPERVISOR_PID"  # set in the worker process: its supervisor's pid
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "restart me now"
STOP_GRACE_SECONDS = 10.0  # after SIGTERM, how long the worker may take before SIGKILL
MAX_RESTART_DELAY_SECONDS = 30.0
STEADY_RUN_SECONDS = 60.0  # a worker that ran this long restarts without the grown delay
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def is_supervised() -> bool:
    return SUPERVISOR_ENV in os.environ


def die_with_supervisor() -> None:
    """In the worker process: end when the supervisor ends, however it ends."""
    supervisor = int(os.environ[SUPERVISOR_ENV])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(
            target=_watch_parent, args=(supervisor,), name="meterfix-parent-watch", daemon=True
        ).start()
    if os.getppid() != supervisor:  # it died before we asked to follow it
        os._exit(1)


def _watch_parent(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(1)
    os._exit(1)


def supervise(stop: threading.Event) -> int:
    """Run the worker process (this command line again) until `stop` is set; restart it
    when it exits on its own. Returns this process's exit code."""
    command = [sys.executable, *sys.orig_argv[1:]]
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    delay = 0.5  # doubled before use: the first unexpected exit waits 1 s
    while True:
        started = time.monotonic()
        code = _run_until_exit(subprocess.Popen(command, env=env), stop)
        if stop.is_set() or code == 0:
            return 0
        if code == RESTART_EXIT_CODE:
            delay = 0.0
        elif time.monotonic() - started > STEADY_RUN_SECONDS:
            delay = 1.0
        else:  # exits again soon after starting: wait longer each time
            delay = min(MAX_RESTART_DELAY_SECONDS, max(1.0, delay * 2))
        log_event("worker.process_restarting", level=logging.WARNING, exit_code=code, delay=delay)
        if stop.wait(delay):
            return 0


def _run_until_exit(child: subprocess.Popen[bytes], stop: threading.Event) -> int:
    while not stop.is_set():
        try:
            return child.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
    child.send_signal(signal.SIGTERM)  # Ctrl-C reached it too; a process manager may not
    try:
        return child.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        log_event("worker.process_killed", level=logging.WARNING, pid=child.pid)
        child.kill()
        return child.wait()
