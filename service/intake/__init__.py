"""Intake: POST /webhooks reads the body under a limit, verifies the signature, stores the
event in the inbox (the per-process writers) and answers only after the commit."""
