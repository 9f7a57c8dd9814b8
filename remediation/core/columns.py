"""A batch of usage rows held as columns: what readers yield, rules read and writers consume.

The names most of the engine imports, kept here for their importers; each lives in its own
module: `column` (a field's text and kinds), `keyorders` (each row's keys in file order),
`batch` (the rows, and the conversions to and from `UsageRecord`), `batchjoin` (batches
concatenated or interleaved) and `batchbounds` (records cut into batches within the cell and
key bounds). Nothing here knows a rule: this is the shape of the data.
"""

from remediation.core.batch import Batch
from remediation.core.column import Column, Indexes
from remediation.core.valuekinds import Kind

__all__ = ["Batch", "Column", "Indexes", "Kind"]
