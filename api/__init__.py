"""HTTP API, WebSocket events, dashboards and Twilio webhooks (FastAPI)."""
