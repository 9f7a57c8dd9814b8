"""A quarantine re-run's run keys, the folders of its outputs and the source that names their
files: one run per generation (and generation traced from) among the rows it takes. Apart
from the task so that picking its rows (`rerun_pick.py`), which follows a row back through
the re-runs that took it, reads the prefix without importing the task.
"""

from __future__ import annotations

RERUN_PREFIX = "quarantine_rerun:"


def rerun_source(action_ref: str, before: str | None = None) -> str:
    """The source of a re-run's runs, which names their output files
    (`quarantine-rerun-<action>.corrected.r1.jsonl`): characters an S3 key needs no special
    handling for. `before`: the source a try of the run recorded before (a task retried after
    the upgrade, whose try wrote `quarantine re-run <action>...`, keys with spaces): kept, so
    the run is redone under the keys it had, uploading nothing new."""
    return before if before is not None else f"quarantine-rerun-{action_ref}"


def rerun_key(action_ref: str, generation: int, traced_from: int | None = None) -> str:
    """The run key of a re-run's run for rows that runs of `generation` quarantined, whose
    input was traced from `traced_from` (`:i<n>` only when that is not `generation - 1`,
    so the keys of re-runs queued before it was kept stay the same)."""
    base = f"{RERUN_PREFIX}{action_ref}"
    key = base if generation <= 1 else f"{base}:g{generation}"
    if traced_from is None or traced_from == generation - 1:
        return key
    return f"{base}:g{generation}:i{traced_from}"


def rerun_tag(run_key: str) -> str:
    """The folder of a re-run run's outputs: `rerun-<action>`, and the group's part of its
    run key (`-g2`, `-g2-i1`) for a group past the first generation. Two groups may write one
    generation (a generation-1 row of ours goes out above it, in 2, as the generation-2 rows
    do): in one folder their corrected objects had one key, the second replacing the first
    before it was imported."""
    return "rerun-" + run_key.removeprefix(RERUN_PREFIX).replace(":", "-")
