"""The live terminal view (``top``) and the self-contained ``demo``.

Everything shown is computed from the sidecars' own ``/metrics``: the view is a Prometheus client
like any dashboard, so what it shows is what an operator's alerts would see.
"""
