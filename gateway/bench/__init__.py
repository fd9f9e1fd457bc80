"""Benchmarks: `handoff122 bench sip|handoff` (ivr, routing and api live in their packages)."""
