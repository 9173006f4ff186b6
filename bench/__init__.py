"""kdisco's benchmarks against the lab (not tests): ``python -m bench --help``.

Every figure is a side-by-side comparison measured in one run, and the run writes
them, with the machine, the versions and the command, to ``docs/performance.md``.
"""
