"""Simulated callers and seats (pjsua2), for tests, demos and benchmarks."""
