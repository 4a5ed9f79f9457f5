"""AnySentry for Kubernetes: security observability and intervention plane for AI agents."""

__version__ = "0.1.0"
