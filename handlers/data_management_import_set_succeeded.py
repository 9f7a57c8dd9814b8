"""`data_management.import_set.succeeded` (snapshot event).

Stripe sends it when a usage file imported from the S3 bucket was processed. Individual
records may still have failed: `status = "succeeded_with_errors"` and `result.errors`
names the failed-records file (downloaded later through the Files API) and its row count.
The import set comes inline (`data.object`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.context import HandlerContext
from handlers.import_sets import handle_import_set
from handlers.records import Outcome

EVENT_TYPE = "data_management.import_set.succeeded"


def handle(event: Mapping[str, Any], ctx: HandlerContext) -> Outcome:
    return handle_import_set(event, ctx)
