"""Builds the adapters remediation jobs need from settings (only here and in the CLI)."""

from __future__ import annotations

from pathlib import Path

import stripe
from sqlalchemy import Engine

from remediation.rules import Rules, load_rules
from service.adapters.bucket import open_bucket
from service.adapters.customers import StripeCustomerDirectory
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_files import StripeFileStore
from service.adapters.stripe_meters import StripeMeterSource
from service.config import Settings
from service.jobs.quarantine_rerun import RerunInputMissing, rerun_quarantine
from service.jobs.remediation import JobDeps, run_task
from service.jobs.runs import RunContext
from service.worker.tasks import TaskKind


def load_configured_rules(settings: Settings) -> Rules:
    """Built-in defaults merged with MFX_RULES (a TOML file), when set."""
    text = Path(settings.mfx_rules).read_text(encoding="utf-8") if settings.mfx_rules else None
    return load_rules(text)


class TaskRunner:
    """Runs remediation tasks for the worker; adapters are built once, meters per task."""

    def __init__(
        self, settings: Settings, engine: Engine, client: stripe.StripeClient | None = None
    ) -> None:
        client = client or build_stripe_client(settings)
        self.settings, self.engine = settings, engine
        self.bucket = open_bucket(settings)
        self.meters = StripeMeterSource(client)
        self.files = StripeFileStore(client, settings.stripe_files_base, settings.stripe_api_key)
        self.customers = StripeCustomerDirectory(client)
        self.rules = load_configured_rules(settings)

    def __call__(self, kind: TaskKind, ref: str) -> str:
        context = RunContext(
            engine=self.engine,
            settings=self.settings,
            bucket=self.bucket,
            meters=list(self.meters.meters()),
            rules=self.rules,
            customers=self.customers if self.rules.policy.customer_metadata_key else None,
        )
        if kind is TaskKind.QUARANTINE_RERUN:
            try:
                return rerun_quarantine(context, ref)
            except RerunInputMissing as exc:  # not retried: nothing names the rows any more
                return f"not re-run: {exc}"
        return run_task(JobDeps(run=context, files=self.files), kind, ref)
