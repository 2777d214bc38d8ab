"""What the sidecar reports: metric definitions (the single source of names), the log line."""
