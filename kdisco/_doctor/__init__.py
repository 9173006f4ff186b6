"""``kdisco doctor``: why a Service name does or does not connect (CLI only).

The command is in ``command`` (``add_arguments``, ``run``); this package's own module
imports nothing, so its parts can import each other without a cycle through it.
"""
