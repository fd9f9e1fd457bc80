"""The SIP edge: Kamailio front door, pjsua2 media workers, and the node's control process."""
