"""A local stand-in for the parts of Stripe meterfix talks to (tests, `meterfix demo`).

Every known difference from Stripe, with its reason: sandbox/DEVIATIONS.md.
"""
