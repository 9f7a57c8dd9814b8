"""The running meterfix program: app factory, configuration, storage, worker, CLI, adapters."""
