"""The extauthz latency benchmark: ``make bench`` / ``python -m benchmarks`` / ``extauthz bench``.

Load comes from real load generators (h2load speaking raw gRPC, h2load and wrk through
Envoy), never from a Python client that would measure itself. Every comparison is a
ratio measured in the same run; see benchmarks/NOTES.md for what was tried.
"""
