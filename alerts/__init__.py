"""Prometheus rules shipped with the exporter, generated from one settings block."""
