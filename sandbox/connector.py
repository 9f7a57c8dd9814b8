"""Stripe's S3 connector, played locally (filled in by part two)."""

from __future__ import annotations

from sandbox.objects import JSON
from sandbox.state import SandboxState


def poll_bucket(
    state: SandboxState, bucket_url: str | None, s3_endpoint_url: str | None
) -> list[JSON]:
    return []
