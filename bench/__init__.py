"""Benchmarks of sandboxclient against a private, real containerd: ``python -m bench``.

Every figure is a ratio of contenders measured side by side in one run, in alternating
rounds, so a noisy machine slows them alike. See ``docs/benchmarks.md``.
"""
