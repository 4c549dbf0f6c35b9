"""The demo and the harness the tests and the benchmarks share with it; a source checkout only.

Not part of the installed ``extauthz`` package: ``python -m demo`` (``make demo``) starts
extauthz with its demo issuer, an echo upstream (``echo.py``) and Envoy loading
``envoy/gateway.yaml`` with other ports (``gateway.py``); ``processes.py`` starts and stops
such processes. ``config.yaml`` and ``policies.yaml`` are the demo's own files.
"""
