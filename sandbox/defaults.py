"""Made-up local credentials and addresses shared by the sandbox and the service's embedded
defaults.

These are test values, not secrets: the sandbox only listens on loopback.
"""

SANDBOX_PORT = 12111
SANDBOX_BASE = f"http://127.0.0.1:{SANDBOX_PORT}"
SANDBOX_API_KEY = "sk_test_meterfix_sandbox"
SANDBOX_WEBHOOK_SECRET = "whsec_test_meterfix_sandbox"

# Stripe's hosts, each under its own prefix of one sandbox URL (see sandbox/hosts.py).
HOST_PREFIX = "/_host/"
HOSTS = ("api", "files", "meter_events")  # the keys of stripe.StripeClient's base_addresses


def sandbox_bases(url: str) -> dict[str, str]:
    """The base URL of each Stripe host on the sandbox at `url`."""
    root = url.rstrip("/")
    return {host: f"{root}{HOST_PREFIX}{host}" for host in HOSTS}
