"""Training together: a dataset coordinator that leases chunks to trainer peers, and the peers, which average their
gradients with hivemind. `leases` is the coordinator's book (pure: SQLite and a clock)."""
