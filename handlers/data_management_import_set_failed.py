"""`data_management.import_set.failed` (snapshot event).

Stripe sends it when a whole usage file imported from the S3 bucket failed, for example
because a mandatory column such as `event_name` is missing; `failed_reason` says why and
no record of the file was imported. The event carries the import set inline
(`data.object`), so nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.context import HandlerContext
from handlers.import_sets import handle_import_set
from handlers.records import Outcome

EVENT_TYPE = "data_management.import_set.failed"


def handle(event: Mapping[str, Any], ctx: HandlerContext) -> Outcome:
    return handle_import_set(event, ctx)
