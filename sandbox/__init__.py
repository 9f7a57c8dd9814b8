"""A local stand-in for the parts of Stripe meterfix talks to (tests, `meterfix demo`)."""
