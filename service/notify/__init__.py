"""Telling people: alerts with a life (open, acknowledged, resolved), critical messages sent
at once, and scheduled Slack and email digests."""
