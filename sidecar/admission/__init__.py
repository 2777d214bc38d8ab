"""What may change the path of a request, all opt-in: the concurrency guard and retries."""
