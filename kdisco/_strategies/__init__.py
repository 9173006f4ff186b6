"""The strategies (one module each), their contract and their registry."""
