"""The room people look into: the dashboard pages, the JSON admin API under /api/, and the
probes (/healthz, /readyz); both behind MFX_ADMIN_TOKEN, all reading the rooms' stores."""
