"""`SandboxAdmin`: a small requests-based client of the sandbox's /_sandbox/ admin API."""

from __future__ import annotations

from typing import Any

import requests

from sandbox.objects import JSON


class SandboxAdminError(RuntimeError):
    """The admin API answered with an error status (the message carries its body)."""


class SandboxAdmin:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/_sandbox/{path}"
        response = self._http.request(method, url, timeout=self.timeout, **kwargs)
        if response.status_code >= 400 and not path == "deliver":
            raise SandboxAdminError(f"{method} {url}: {response.status_code} {response.text}")
        return response.json()

    def reset(self) -> None:
        self._call("POST", "reset")

    def configure(self, **options: Any) -> JSON:
        """Options: strict_customers (bool), rate_limit_per_second (int, 0 = off),
        meter_event_session_seconds (float, Stripe's 900)."""
        return dict(self._call("POST", "config", json=options))

    def create_meter(self, event_name: str, **fields: Any) -> JSON:
        """Fields: display_name, status, customer_mapping, value_settings, id, default_aggregation.
        `value_key=`/`customer_key=` are shortcuts for the two payload-key settings."""
        if "value_key" in fields:
            fields["value_settings"] = {"event_payload_key": fields.pop("value_key")}
        if "customer_key" in fields:
            key = fields.pop("customer_key")
            fields["customer_mapping"] = {"event_payload_key": key, "type": "by_id"}
        return dict(self._call("POST", "meters", json={"event_name": event_name, **fields}))

    def meters(self) -> list[JSON]:
        return list(self._call("GET", "meters"))

    def deactivate_meter(self, meter_id: str) -> JSON:
        return dict(self._call("POST", f"meters/{meter_id}/deactivate"))

    def create_customer(
        self, customer_id: str | None = None, metadata: dict[str, str] | None = None, **fields: Any
    ) -> JSON:
        body = {"id": customer_id, "metadata": metadata or {}, **fields}
        return dict(self._call("POST", "customers", json=body))

    def upload_file(
        self,
        content: bytes | str,
        filename: str = "failed_records.csv",
        purpose: str = "data_management_manual_upload",
    ) -> JSON:
        data = content.encode() if isinstance(content, str) else content
        params = {"filename": filename, "purpose": purpose}
        return dict(self._call("POST", "files", params=params, data=data))

    def add_event(self, event: JSON) -> JSON:
        return dict(self._call("POST", "events", json=event))

    def events(self) -> list[JSON]:
        return list(self._call("GET", "events"))

    def deliver(self, event_id: str, url: str, secrets: list[str] | None = None) -> JSON:
        """{"status": int, "body": text}; status 0 plus "error" when the URL is unreachable."""
        body: JSON = {"event_id": event_id, "url": url}
        if secrets:
            body["secrets"] = secrets
        return dict(self._call("POST", "deliver", json=body))

    def inject_fault(
        self, method: str, path_prefix: str, status: int = 500, count: int = 1, **options: Any
    ) -> JSON:
        """Options: rate, retry_after, delay, after (see sandbox.state.Fault); status 0 drops
        the connection; a negative count never runs out."""
        body = {"method": method, "path_prefix": path_prefix, "status": status, "count": count}
        return dict(self._call("POST", "faults", json={**body, **options}))

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def requests(self) -> list[JSON]:
        return list(self._call("GET", "requests"))

    def meter_events(self) -> list[JSON]:
        return list(self._call("GET", "meter_events"))

    def duplicates(self) -> list[JSON]:
        return list(self._call("GET", "duplicates"))

    def pending_errors(self) -> list[JSON]:
        return list(self._call("GET", "pending_errors"))

    def deliveries(self) -> list[JSON]:
        return list(self._call("GET", "deliveries"))

    def flush(self) -> list[JSON]:
        """Close the validation window; returns the error-report events created (and delivered)."""
        return list(self._call("POST", "flush")["events"])

    def connector_poll(self) -> list[JSON]:
        """One S3-connector pass; returns the import-set events created (and delivered)."""
        return list(self._call("POST", "connector/poll")["events"])

    def import_sets(self) -> list[JSON]:
        return list(self._call("GET", "import_sets"))
