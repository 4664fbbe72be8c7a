"""impasto's benchmark suite: every figure a ratio against a baseline from the same run.

Run it with ``python -m bench`` (see :mod:`bench.run`).
"""
