"""``kdisco doctor``: why a Service name does or does not connect (CLI only)."""
