"""Jobs: remediation runs and their inputs: failed-records files of import sets, meter
error reports, the poller's local import sets and quarantine re-runs, exactly once per run key."""
