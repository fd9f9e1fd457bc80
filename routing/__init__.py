"""The routing service (ACD): seats, skills, queues and who takes which call.

No SIP and no HTTP here.  The decisions are pure (``routing.acd``); persistence and the MQTT bus
sit at the edge (``routing.store``, ``routing.bus``) and consume the events the decisions return.
"""
