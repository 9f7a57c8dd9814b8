"""One module per Stripe event type, and the explicit registry mapping type -> handler."""
