"""The console proxy benchmark: `make bench` (see README, Performance)."""
