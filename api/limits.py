"""The API's limits (issue 12), as one value handed to the app by the composition root.

They mirror the ``api_*`` settings of ``gateway.settings.Settings``; the defaults here are the
same, so a test or a tool that builds the app without settings gets the operator's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The one route that takes a large body: the IVR flow upload.
FLOW_UPLOAD_PATH = "/api/v1/admin/flow"


@dataclass(frozen=True, slots=True)
class ApiLimits:
    max_body_bytes: int = 64 * 1024
    max_flow_bytes: int = 1024 * 1024
    flow_parse_timeout_s: float = 2.0
    auth_failures: int = 20
    auth_window_s: float = 60.0
    ws_auth_timeout_s: float = 5.0
    #: Live messages a WebSocket client may have waiting; past it, RESYNC and a fresh snapshot.
    ws_queue: int = 256

    @classmethod
    def from_settings(cls, s: Any) -> ApiLimits:
        return cls(max_body_bytes=s.api_max_body_bytes, max_flow_bytes=s.api_max_flow_bytes,
                   flow_parse_timeout_s=s.api_flow_parse_timeout_s, auth_failures=s.api_auth_failures,
                   auth_window_s=s.api_auth_window_s, ws_auth_timeout_s=s.api_ws_auth_timeout_s,
                   ws_queue=getattr(s, "api_ws_queue", 256))

    def body_limit_for(self, path: str) -> int:
        return self.max_flow_bytes if path == FLOW_UPLOAD_PATH else self.max_body_bytes
