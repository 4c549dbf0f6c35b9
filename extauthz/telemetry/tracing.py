"""Traces: a span per Check (``extauthz.check``), the child of the caller's trace context
(W3C ``traceparent``/``tracestate``, or B3 as Envoy emits it), with child spans for JWKS
fetches, store loads and step-up ceremonies.

Off by default. The standard variables turn it on: ``OTEL_TRACES_EXPORTER=otlp`` (or
``console``), or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``; ``OTEL_SDK_DISABLED=true``
wins. When off, the hot path pays one global check and nothing else. Span attributes
never hold tokens, cookies or query strings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

_tracer: Any = None
_propagator: Any = None


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "")
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(environ: Mapping[str, str] | None = None, exporter: Any = None) -> bool:
    """Turn tracing on from the environment (or with an exporter, for tests)."""
    global _tracer, _propagator
    from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    environ = os.environ if environ is None else environ
    if exporter is not None:
        processor: Any = SimpleSpanProcessor(exporter)
    elif not tracing_enabled(environ):
        return False
    elif environ.get("OTEL_TRACES_EXPORTER") == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        processor = SimpleSpanProcessor(ConsoleSpanExporter())
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    provider = TracerProvider(resource=Resource.create({"service.name": "extauthz"}))
    provider.add_span_processor(processor)
    _tracer = provider.get_tracer("extauthz")
    _propagator = CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat(),
                                       B3SingleFormat()])
    return True


def reset() -> None:
    global _tracer, _propagator
    _tracer = _propagator = None


def active() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def check_span(headers: Mapping[str, str]) -> Iterator[Any]:
    """The Check span, parented on the trace context in the request's headers."""
    from opentelemetry.trace import SpanKind

    context = _propagator.extract(headers)
    with _tracer.start_as_current_span("extauthz.check", context=context,
                                       kind=SpanKind.SERVER) as span:
        yield span


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, str] | None = None) -> Iterator[Any]:
    """A child span when tracing is on; nothing at all when it is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, attributes=dict(attributes or {})) as s:
        yield s
