"""execdriver's benchmarks (issue 7): each case side by side with its anchor.

Run ``python -m bench`` (or ``bench/run.py``) as root from the repository, with
the project's .venv; ``--quick`` for a short run, ``--cases`` to choose. See
docs/performance.md. Not part of the test suite: nothing here asserts a time.
"""
