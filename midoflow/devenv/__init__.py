"""Development environment: start real components (ZooKeeper, ...) for tests,
the demo and by hand. Never imported by the agent or the API."""
