"""moi's benchmark: ``python -m benchmarks`` (see README, "Performance")."""
