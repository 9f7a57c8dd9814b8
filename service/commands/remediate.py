"""`meterfix validate FILE` and `meterfix remediate FILE --out DIR`.

Exit codes: validate exits 1 when any row is invalid; remediate exits 0 when it ran (rows in
quarantine included). Bad input (missing file, undecodable bytes, a file that is not usage,
malformed rules or meters, an output directory that cannot be written, no meters at all)
exits non-zero with one line on stderr naming what is wrong, and no traceback.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from remediation.engine import RemediationResult
from remediation.errors import MeterfixError
from remediation.meters import Meter
from remediation.ports import CustomerDirectory
from remediation.rules import Rules
from service.commands._remediate_run import run, source_name
from service.commands._shown import shown
from service.runtime import Adapters

if TYPE_CHECKING:  # pydantic is loaded only once the settings are read
    from service.config import Settings

T = TypeVar("T")


def _adapters(rules_path: str | None, meters_path: str | None) -> Adapters:
    """The light builder: no database, no web stack; the settings are read only if a rules
    file, the meters or the bucket need them. Without an API key (the embedded sandbox)
    Stripe is tried once, quickly."""
    return Adapters(rules_path=rules_path, meters_path=meters_path, stripe_network_retries=None)


def _configured(get: Callable[[], T]) -> T:
    """`get()`; settings that do not validate are one line, as every command says them. Once
    the settings are read, a variable of the environment that is no setting is warned of
    (`config.unknown_variable`, on stderr), as the other commands do: `MFX_RULE` for
    MFX_RULES ran the built-in rules, unsaid."""
    try:
        value = get()
    except Exception as exc:
        # Imported here: pydantic is loaded only once settings are read (not with `--rules`
        # and `--meters`: that command stays ~30 MB lighter), and by then it is loaded.
        from pydantic import ValidationError

        from service.config.diagnostics import settings_problems

        if isinstance(exc, ValidationError):
            raise click.ClickException(f"bad configuration: {settings_problems(exc)}") from exc
        raise
    _warn_unknown_variables()
    return value


_warned: list[str] = []  # the warnings said, once a process


def _warn_unknown_variables() -> None:
    """Only once the settings were read (`service.config` loaded): given --rules and
    --meters, no setting is read (nor pydantic loaded), and none can change the run."""
    if _warned or "service.config" not in sys.modules:
        return
    import logging
    import os

    from service.config.diagnostics import unknown_variable_warnings
    from service.logs import log_event

    _warned.append("done")
    for message in unknown_variable_warnings(os.environ):
        log_event("config.unknown_variable", level=logging.WARNING, message=message)


def _stripe_key(settings: Settings) -> None:
    """One line naming STRIPE_API_KEY when it is missing, before any call to Stripe."""
    from service.config.diagnostics import missing_api_key

    problem = missing_api_key(settings)
    if problem is not None:
        raise click.ClickException(f"{problem}; or pass --meters FILE")


def _meters(adapters: Adapters) -> list[Meter]:
    path = adapters.meters_path
    if path is None:
        return _meters_from_stripe(adapters)
    try:
        meters = adapters.meters
    except OSError as exc:
        raise click.ClickException(
            shown(f"cannot read meters {path}: {exc.strerror or exc}")
        ) from exc
    except (ValueError, MeterfixError) as exc:  # not JSON, or not meters
        raise click.ClickException(shown(f"cannot read meters {path}: {exc}")) from exc
    if not meters:  # `[]`: every row was quarantined `no_meter`, exit 0
        raise click.ClickException(f"{shown(path)} holds no meters: every row would name no meter")
    return meters


def _meters_from_stripe(adapters: Adapters) -> list[Meter]:
    """Every meter (active and inactive) from Stripe, or the sandbox when none is configured."""
    settings = _configured(lambda: adapters.settings)
    _stripe_key(settings)
    try:
        return adapters.meters
    except Exception as exc:  # one clear line: the Stripe call failed
        if settings.embedded_sandbox:
            raise click.ClickException(
                "no meters: pass --meters or set STRIPE_API_KEY (no key is set and the "
                f"bundled sandbox at {settings.stripe_api_base} does not answer)"
            ) from exc
        raise click.ClickException(shown(f"cannot list meters from Stripe: {exc}")) from exc


def _rules(adapters: Adapters) -> Rules:
    path = _configured(lambda: adapters.rules_path)
    try:
        return adapters.rules
    except OSError as exc:
        raise click.ClickException(shown(f"cannot read rules {path}: {exc.strerror}")) from exc
    except MeterfixError as exc:
        raise click.ClickException(shown(f"bad rules {path}: {exc.reason}")) from exc


def _customers(adapters: Adapters, rules: Rules) -> CustomerDirectory | None:
    """Stripe's customers (or the sandbox's), when the rules search them by metadata
    (`customer_metadata_key`): then a trim/case fix is checked with Stripe too, as the
    worker does (the CLI searched nothing and sent `cus_x ` trimmed unchecked). Without it
    the CLI makes no Stripe call for customers, and works offline."""
    if not rules.policy.customer_metadata_key:
        return None
    _stripe_key(_configured(lambda: adapters.settings))
    return adapters.customer_directory()


LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z: Stripe's timestamps are RFC 3339


def _now(value: str | None) -> int:
    """`--now`: unix seconds (ASCII digits) or ISO-8601 (UTC when no offset is given), from
    1970 to the end of year 9999. `²`, 5,000 digits or a date past the calendar failed with
    a traceback; a negative time or one past 9999 was taken."""
    if value is None:
        return int(time.time())
    from datetime import UTC, datetime

    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text) if len(text) <= 12 else LAST_SECOND + 1
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            seconds = int(moment.timestamp())
        except (ValueError, OverflowError) as exc:
            shown = repr(value[:40])
            raise click.BadParameter(
                f"{shown} is neither unix seconds nor ISO-8601", param_hint="--now"
            ) from exc
    if not 0 <= seconds <= LAST_SECOND:
        raise click.BadParameter(
            f"{value[:40]!r} is outside 1970-01-01 to 9999-12-31 (UTC)", param_hint="--now"
        )
    return seconds


def _writable(out: Path) -> None:
    """DIR exists (created if needed) and takes files, or one line naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise click.ClickException(shown(f"--out {out}: {exc.strerror or exc}")) from exc


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, sort_keys=False))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Nothing printed is read as markup: paths, codes and a header's names are the user's
    # (`usage[eu].csv` was shown as `usage.csv`, an error code `[/oops]` crashed the table);
    # a path is one line however long (cut at 80 columns, it could not be copied), and its
    # control characters are code points (`shown`): a code's ESC coloured the terminal, its
    # line break made two rows of the table
    table = Table(title=Text(shown(summary["source"])))
    for name in ("code", "corrected", "quarantined"):
        table.add_column(name)
    for code, counts in summary["by_code"].items():
        table.add_row(Text(shown(code)), str(counts["corrected"]), str(counts["quarantined"]))
    console = Console()
    console.print(
        f"rows {summary['input_rows']}: valid {summary['valid']}, corrected "
        f"{summary['corrected']}, quarantined {summary['quarantined']}"
    )
    for repair in summary.get("repairs", []):
        console.print(f"repaired: {shown(repair)}", markup=False)
    if summary["by_code"]:
        console.print(table)
    for kind in ("corrected", "quarantine"):
        for path in summary["outputs"][kind]:
            console.print(f"{kind}: {shown(path)}", markup=False, soft_wrap=True)
    if summary["outputs"]["audit"]:
        console.print(f"audit: {shown(summary['outputs']['audit'])}", markup=False, soft_wrap=True)
    unchanged = set(summary.get("unchanged", []))
    for key in summary.get("uploaded", []):  # an identical object there: nothing was written
        said = "unchanged: {} (identical object)" if key in unchanged else "uploaded: {}"
        line = said.format(shown(key))
        console.print(line, markup=False, soft_wrap=True)


_file_arg = click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
_meters_opt = click.option(
    "--meters",
    "meters_path",
    type=str,
    default=None,
    help="meters JSON (GET /v1/billing/meters); default: from Stripe",
)
_rules_opt = click.option(
    "--rules", "rules_path", type=str, default=None, help="rules TOML; default: MFX_RULES"
)
_json_opt = click.option("--json", "as_json", is_flag=True, help="print one JSON summary")
_now_opt = click.option("--now", "now_text", default=None, help="reference time (unix or ISO)")


@click.command("validate")
@_file_arg
@_meters_opt
@_rules_opt
@_json_opt
@_now_opt
def validate_command(
    file: Path, meters_path: str | None, rules_path: str | None, as_json: bool, now_text: str | None
) -> None:
    """Check FILE against the meters without writing anything; exit 1 if any row is invalid."""
    _exists(file)
    adapters = _adapters(rules_path, meters_path)
    rules = _rules(adapters)
    meters = _meters(adapters)
    customers = _customers(adapters, rules)
    result = run(file, None, meters, rules, _now(now_text), "derive", customers=customers)
    summary = dict(result.summary, outputs={"corrected": [], "quarantine": [], "audit": None})
    _report(summary, as_json)
    if summary["input_rows"] != summary["valid"]:
        sys.exit(1)


@click.command("remediate")
@_file_arg
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="directory for the corrected, quarantine and audit files (created if needed)",
)
@_meters_opt
@_rules_opt
@_json_opt
@_now_opt
@click.option(
    "--identifiers",
    type=click.Choice(["derive", "keep"]),
    default="derive",
    help="derive: re-sent rows get <original>-mfx<generation>; keep: only for rows never accepted",
)
@click.option(
    "--upload",
    is_flag=True,
    help="also upload the outputs to BUCKET_URL (MFX_CORRECTED_PREFIX / MFX_QUARANTINE_PREFIX)",
)
def remediate_command(
    file: Path,
    out: Path,
    meters_path: str | None,
    rules_path: str | None,
    as_json: bool,
    now_text: str | None,
    identifiers: str,
    upload: bool,
) -> None:
    """Write corrected and quarantine files for FILE into DIR (exit 0 when it ran)."""
    _exists(file)
    now = _now(now_text)
    adapters = _adapters(rules_path, meters_path)
    rules = _rules(adapters)
    meters = _meters(adapters)
    customers = _customers(adapters, rules)
    _writable(out)  # created once every other option is known good: a typo left a new DIR
    result = run(
        file, out, meters, rules, now, identifiers, audit_output=upload, customers=customers
    )
    summary = dict(result.summary)
    if upload:
        summary["unchanged"] = []  # of those, the keys an identical object already held
        summary["uploaded"] = _upload(adapters, result, summary["unchanged"])
    _report(summary, as_json)


def _upload(adapters: Adapters, result: RemediationResult, unchanged: list[str]) -> list[str]:
    """Corrected files to the corrected prefix (they are imported again), quarantine and
    audit files to the quarantine prefix; identical objects already there are skipped."""
    from service.adapters.bucket import BucketError, upload_outputs

    outputs = list(result.outputs) + ([result.audit] if result.audit else [])
    settings = _configured(lambda: adapters.settings)
    try:
        return upload_outputs(adapters.bucket, outputs, settings, unchanged)
    except (BucketError, OSError) as exc:
        raise click.ClickException(shown(f"upload to {settings.bucket_url} failed: {exc}")) from exc


def _exists(file: Path) -> None:
    """A regular file of a name text can hold (`source_name`), refused before --out is made."""
    if file.is_file():
        source_name(file)
        return
    if file.exists():  # a directory, a device (/dev/zero never ends), a pipe
        raise click.ClickException(f"{shown(file)}: not a regular file")
    raise click.ClickException(f"{shown(file)}: no such file")


COMMANDS: list[click.Command] = [validate_command, remediate_command]
