"""SQLModel tables, one module per area. Importing this package registers every table."""

from service.models.alerts import Alert
from service.models.inbox import InboxEvent, InboxStatus, PayloadStyle
from service.models.poller import BucketObject, ImportedRow, ObjectStatus
from service.models.remediation import (
    CorrectionAudit,
    OutputObject,
    QuarantinedRow,
    RemediationRun,
    RunStatus,
)
from service.models.reports import ErrorReport, ErrorSample, ErrorTypeCount, ImportSet

__all__ = [
    "Alert",
    "BucketObject",
    "CorrectionAudit",
    "ErrorReport",
    "ErrorSample",
    "ErrorTypeCount",
    "ImportSet",
    "ImportedRow",
    "InboxEvent",
    "InboxStatus",
    "ObjectStatus",
    "OutputObject",
    "PayloadStyle",
    "QuarantinedRow",
    "RemediationRun",
    "RunStatus",
]
