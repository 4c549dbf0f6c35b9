"""Telemetry: OpenTelemetry metrics (Prometheus text at /metrics, OTLP when configured)
and traces (OTLP, off unless the standard OTEL_* variables turn them on)."""
