"""The jobs' store: every query over what the jobs write, one module per aggregate: runs and their
outputs (`runs.py`), their totals and charts (`run_counts.py`), the loading of a run's audit and
quarantined rows (`loads.py`, on `sorted_stage.py`), the lineage look-ups over them
(`lineage.py`), quarantined rows, their lists, counts and retention (`quarantine.py`), the
quarantine filter (`quarantine_filter.py`), a quarantine re-run's queueing (`rerun_queue.py`),
the rows it picks (`rerun_rows.py`), their other takes (`other_takes.py`) and what became of a
run's rows (`rerun_takes.py`), a row's usage timestamp (`usage_stamps.py`), the marks on rows
their object sent again (`taken_again.py`), import sets and the error reports' lists and
look-ups (`reports.py`), what is recorded and marked of an error report, and its retention
(`report_records.py`), the reports the digests count as left unremediated (`reports_left.py`).
The dashboard, the admin API, the digests and /metrics read these aggregates through it only.

Rows come back as plain mappings (or small tuples); turning them into JSON or messages is the
reader's business.
"""
