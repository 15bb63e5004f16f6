"""Operating Torghut: the metrics endpoint of the dataflow processes and the SLI metrics
(:mod:`torghut.observability.metrics`).

The alert rules that use these metrics are ``infra/prometheus/``, the dashboard
``infra/grafana/``, and what to do when an alert fires ``docs/runbooks/``.
"""
