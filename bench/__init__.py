"""Side-by-side benchmarks: our token stores against the naive 0.6.x design and the locks users would pick.

Run from the repository root::

    python -m bench --quick --json out.json     # about a minute on 2 cores
    python -m bench --json out.json             # full mode, a few minutes

Nothing here is imported by the library; the bench-only packages
(portalocker, python-redis-lock, redis, matplotlib) live in the ``bench`` extra.
"""
