"""SQLModel tables, one module per area. Importing this package registers every table."""

from service.models.alerts import (
    AdminAction,
    AdminActionName,
    Alert,
    AlertSeverity,
    AlertStatus,
    DigestRun,
    DigestStatus,
)
from service.models.health import Heartbeat, ProcessRole
from service.models.inbox import InboxEvent, InboxStatus, PayloadStyle
from service.models.poller import BucketObject, ImportedRow, ObjectStatus, PollerBatch
from service.models.remediation import (
    CorrectionAudit,
    OutputKind,
    OutputObject,
    QuarantinedRow,
    RemediationRun,
    RunStatus,
    RunTrigger,
)
from service.models.reports import (
    ErrorReport,
    ErrorReportStatus,
    ErrorSample,
    ErrorTypeCount,
    ImportSet,
)

__all__ = [
    "AdminAction",
    "AdminActionName",
    "Alert",
    "AlertSeverity",
    "AlertStatus",
    "BucketObject",
    "CorrectionAudit",
    "DigestRun",
    "DigestStatus",
    "ErrorReport",
    "ErrorReportStatus",
    "ErrorSample",
    "ErrorTypeCount",
    "Heartbeat",
    "ImportSet",
    "ImportedRow",
    "InboxEvent",
    "InboxStatus",
    "ObjectStatus",
    "OutputKind",
    "OutputObject",
    "PayloadStyle",
    "PollerBatch",
    "ProcessRole",
    "QuarantinedRow",
    "RemediationRun",
    "RunStatus",
    "RunTrigger",
]
