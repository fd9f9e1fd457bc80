"""The accident-eligibility IVR: a flow as data and a pure interpreter (no SIP, no I/O)."""
