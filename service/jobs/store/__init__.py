"""The jobs' store: every query over what the jobs write, one module per aggregate: runs
with their outputs and audit (`runs.py`), quarantined rows and the quarantine filter
(`quarantine.py`), import sets and error reports (`reports.py`). The dashboard, the admin
API, the digests and /metrics read these aggregates through it only.

Rows come back as plain mappings (or small tuples); turning them into JSON or messages is the
reader's business.
"""
