"""Worker: claims inbox items under leases renewed by heartbeats, dispatches them to the
handlers or remediation tasks, retries with backoff and dead-letters what keeps failing."""
