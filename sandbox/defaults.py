"""Made-up local credentials shared by the sandbox and the service's embedded defaults.

These are test values, not secrets: the sandbox only listens on loopback.
"""

SANDBOX_PORT = 12111
SANDBOX_BASE = f"http://127.0.0.1:{SANDBOX_PORT}"
SANDBOX_API_KEY = "sk_test_meterfix_sandbox"
SANDBOX_WEBHOOK_SECRET = "whsec_test_meterfix_sandbox"
