"""A media worker process: one pjsua2 Endpoint holding a few calls, driven by the control process."""
