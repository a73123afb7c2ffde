"""Plumbing every stage shares: errors, atomic files and the one JSON loader, locks, signals, seeding, the
repository's paths. Imports nothing else of kdsae_core."""
