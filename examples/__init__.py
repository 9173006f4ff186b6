"""Runnable examples; `nox -s demo` runs examples.demo."""
