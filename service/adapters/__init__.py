"""The only place that talks to the outside world: Stripe, the bucket, the database, Slack, SMTP."""
