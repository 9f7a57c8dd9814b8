"""What a command says about the environment it was given: a refused setting in one line,
variables meterfix would silently ignore (misspellings), and a missing STRIPE_API_KEY."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from service.config import Settings


def settings_problems(exc: ValidationError) -> str:
    """`MFX_WORKER_LEASE: Value error, must be a positive number; ...`: one line (a check of
    several settings at once names them in its message)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])).upper()}: {_problem(e)}" if e["loc"] else _problem(e)
        for e in exc.errors()
    )


def _problem(error: Any) -> str:
    """pydantic's message without its "Value error, " prefix; a boolean setting (only
    MFX_MESSAGE_EXAMPLES) says it takes on or off, as the README writes it."""
    if error["type"].startswith("bool_"):
        return "must be on or off"
    return str(error["msg"]).removeprefix("Value error, ")


# Variables of ours that are not settings: read by the sandbox command, the tests and the
# benches (`MFX_BENCH_*`)
OTHER_VARIABLES = (
    "MFX_SANDBOX_STATE_FILE",
    "MFX_TEST_DATABASE_URL",
    "MFX_FUZZ_EXAMPLES",
    "MFX_CORPUS_REGENERATE",
)
# Families whose near misses are worth a word (others' STRIPE_* variables are left alone)
_FAMILIES = ("MFX_", "STRIPE_", "DIGEST_", "SMTP_", "SLACK_", "LOG_", "DATABASE_", "BUCKET_")


def unknown_variables(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """The environment's names meterfix would silently ignore, each with the setting it
    looks like a misspelling of (None: none): every unknown `MFX_` name (ours alone), and
    other families' near misses (`STRIPE_WEBHOOK_SECRET` for `STRIPE_WEBHOOK_SECRETS`).
    `MFX_POLER=on` left the poller off, unsaid: the bucket's usage never imported."""
    known = [name.upper() for name in Settings.model_fields if name != "embedded_sandbox"]
    known += OTHER_VARIABLES
    found = []
    for name in sorted({name.upper() for name in names}):
        if name in known or name.startswith("MFX_BENCH") or not name.startswith(_FAMILIES):
            continue
        like = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if like or name.startswith("MFX_"):
            found.append((name, like[0] if like else None))
    return found


def unknown_variable_warnings(names: Iterable[str]) -> list[str]:
    """`unknown_variables` as the warnings every command logs (`config.unknown_variable`)."""
    return [
        f"{name} is not a meterfix setting: ignored" + (f" (did you mean {like}?)" if like else "")
        for name, like in unknown_variables(names)
    ]


def missing_api_key(settings: Settings) -> str | None:
    """The one line a command that calls Stripe says when STRIPE_API_KEY is not set while
    other Stripe settings are (without any, the embedded sandbox's key is used): every call
    then failed later, file by file, with Stripe's "Invalid API Key provided", never
    naming the variable. None when a key is set."""
    if settings.stripe_api_key.strip():
        return None
    return (
        "STRIPE_API_KEY is not set, though other Stripe settings are: set it to your secret "
        "key (sk_... or rk_...), which every call to Stripe needs (with no Stripe setting at "
        "all, the bundled sandbox is used)"
    )
