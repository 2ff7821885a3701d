"""Developer tooling, not needed by a deployed service: the process supervisor behind
``facemask run``, the test fixtures and the benchmarks, and the local redis-server helper.
"""
