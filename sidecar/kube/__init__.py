"""What knows Kubernetes objects: adding the sidecar to workloads (``inject``)."""
