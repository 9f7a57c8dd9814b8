"""The jobs' store: every query over what the jobs write, one module per aggregate: runs
and their outputs (`runs.py`), the loading of a run's audit and quarantined rows
(`loads.py`), the lineage look-ups over them (`lineage.py`), quarantined rows and the
quarantine filter (`quarantine.py`), import sets and error reports (`reports.py`). The
dashboard, the admin API, the digests and /metrics read these aggregates through it only.

Rows come back as plain mappings (or small tuples); turning them into JSON or messages is the
reader's business.
"""
