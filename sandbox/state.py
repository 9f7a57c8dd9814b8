"""The sandbox's in-memory state: everything behind one lock, nothing persisted."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from sandbox.clock import now
from sandbox.errors import not_found
from sandbox.objects import JSON, build_file
from sandbox.tracked import TrackedDict


@dataclass
class Fault:
    """The next `remaining` requests matching method + path prefix answer `status` (a
    negative `remaining`: no limit). `rate` < 1 hits only that share of matching requests, at
    random. `status` 0 drops the connection without an answer. `retry_after` adds that header;
    `delay` waits first (so a client with a shorter timeout gives up); `after` handles the
    request first and then answers the fault (the effect happened, the answer was lost)."""

    method: str
    path_prefix: str
    status: int
    remaining: int
    rate: float = 1.0
    retry_after: int | None = None
    delay: float = 0.0
    after: bool = False

    def matches(self, method: str, path: str) -> bool:
        method_ok = self.method in ("*", "") or self.method.upper() == method.upper()
        return self.remaining != 0 and method_ok and path.startswith(self.path_prefix)

    def fires(self) -> bool:
        return self.rate >= 1.0 or random.random() < self.rate


@dataclass
class StoredFile:
    obj: JSON
    content: bytes


@dataclass
class PendingError:
    """An invalid meter event waiting for the next validation-window flush."""

    code: str
    message: str
    identifier: str
    event_name: str
    meter_id: str | None


@dataclass
class SandboxOptions:
    """Behaviour switches (all off by default).

    strict_customers: report `meter_event_customer_not_found` for unknown customer ids even
    while no customer is registered (by default that check only runs once at least one
    customer exists, so tests that never register customers are not flooded with errors).
    rate_limit_per_second: answer 429 beyond this many Stripe API requests per second (0: off).
    meter_event_session_seconds: how long a meter event session token lives (Stripe: 15 min).
    """

    strict_customers: bool = False
    rate_limit_per_second: int = 0
    meter_event_session_seconds: float = 15 * 60


@dataclass
class SandboxState:
    options: SandboxOptions = field(default_factory=SandboxOptions)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    meters: dict[str, JSON] = field(default_factory=dict)
    customers: dict[str, JSON] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    # the stores a state file journals key by key (sandbox/persistence.py) are TrackedDicts
    events: dict[str, JSON] = field(default_factory=TrackedDict)
    requests: list[JSON] = field(default_factory=list)
    meter_events: list[JSON] = field(default_factory=list)
    duplicates: list[JSON] = field(default_factory=list)
    pending_errors: list[PendingError] = field(default_factory=list)
    identifiers: dict[str, float] = field(default_factory=TrackedDict)
    sessions: dict[str, float] = field(default_factory=TrackedDict)
    faults: list[Fault] = field(default_factory=list)
    import_sets: dict[str, JSON] = field(default_factory=dict)
    connector_seen: dict[str, str] = field(default_factory=TrackedDict)
    deliveries: list[JSON] = field(default_factory=list)
    connector_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rate_window: tuple[int, int] = (0, 0)

    def reset(self) -> None:
        """Forget every object and log; keep the options."""
        with self.lock:
            fresh = SandboxState(options=self.options)
            for name, value in vars(fresh).items():
                if name not in ("lock", "connector_lock"):
                    setattr(self, name, value)

    def add_file(self, content: bytes, filename: str, purpose: str) -> JSON:
        obj = build_file(filename, purpose, len(content))
        with self.lock:
            self.files[obj["id"]] = StoredFile(obj=obj, content=content)
        return obj

    def meter_for_event_name(self, event_name: str) -> JSON | None:
        """The meter an event name targets, preferring an active one."""
        with self.lock:
            candidates = [m for m in self.meters.values() if m["event_name"] == event_name]
        active = [m for m in candidates if m["status"] == "active"]
        chosen = active or candidates
        return chosen[0] if chosen else None

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path) and fault.fires():
                    if fault.remaining > 0:
                        fault.remaining -= 1
                    return fault
        return None

    def over_rate_limit(self) -> bool:
        limit = self.options.rate_limit_per_second
        if limit <= 0:
            return False
        second = int(now())
        with self.lock:
            window, count = self._rate_window
            count = count + 1 if window == second else 1
            self._rate_window = (second, count)
        return count > limit

    def session_valid(self, token: str) -> bool:
        return self.session_status(token) == "valid"

    def session_status(self, token: str) -> str:
        """`valid`, `expired` (a token this sandbox issued, past its `expires_at`) or `unknown`."""
        with self.lock:
            expires_at = self.sessions.get(token)
        if expires_at is None:
            return "unknown"
        return "valid" if expires_at > now() else "expired"

    def require(self, store: str, object_id: str, kind: str) -> JSON:
        """One object of `meters`/`customers` (the live dict: mutate it under the lock), or a
        Stripe-shaped 404 for `kind`."""
        with self.lock:
            found: JSON | None = getattr(self, store).get(object_id)
        if found is None:
            raise not_found(kind, object_id)
        return found

    def snapshot(self, name: str) -> list[Any]:
        """A copy of one of the logs or stores (a dict gives its values), taken under the lock."""
        with self.lock:
            value = getattr(self, name)
            return list(value.values() if isinstance(value, dict) else value)
