"""Observation of the bytes as they pass: SSE decoding, usage shapes, rate-limit headers.

Synchronous and bounded: a reader is fed a chunk after it was written to the client, so
observing can never delay a byte, and a reader's failure is counted, never raised.
"""
