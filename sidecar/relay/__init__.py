"""The data path: the catch-all proxy handler, the upstream leg, hop-by-hop headers, envelopes.

Bytes flow client → upstream → client through here unchanged; everything else only watches.
"""
