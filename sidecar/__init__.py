"""deepseek-sidecar: a transparent observability and rate-limit sidecar for LLM APIs."""

__version__ = "0.1.0"
