"""Producer formats → the canonical, redacted event `anysentry.agent_event.v1`."""
