"""The running meterfix program, in rooms by flow: intake, worker, jobs, poller, notify, web
(plus adapters, models, commands); docs/architecture.md walks through them."""
