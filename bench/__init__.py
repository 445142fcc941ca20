"""The imbus benchmark suite: scripts that measure the bus against baselines
taken in the same run, on the same machine. Run them all with ``scripts/bench``."""
