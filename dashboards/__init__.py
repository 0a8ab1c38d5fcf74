"""Grafana dashboards of the flow exporter, generated as code (see `dashboards.generate`)."""
