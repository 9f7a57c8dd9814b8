"""Pure remediation domain: records, error codes, classification, correctors, readers, writers."""
