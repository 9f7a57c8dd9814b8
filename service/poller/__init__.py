"""Poller: the bundled importer. Lists the bucket, imports new usage files as meter events
(resumably, remembering key+ETag), hands failed rows to remediation; one leader at a time."""
