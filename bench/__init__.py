"""Load tests of a running Triggers stack: ``scripts/bench.sh`` (or ``make bench``) runs ``bench.run``."""
