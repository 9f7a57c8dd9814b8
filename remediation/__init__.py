"""Pure remediation domain: records, error codes, validation, readers, writers; `core/` the
columnar engine and its rules."""
