"""docs/reference/metrics.md: every Prometheus metric the bridge exports, from bridge.infra.metrics.Metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from bridge.infra.metrics import Metrics


def metric_rows() -> list[tuple[str, str, tuple[str, ...], str]]:
    rows = []
    for value in vars(Metrics()).values():
        if isinstance(value, MetricWrapperBase):
            metric: Any = value
            kind = str(metric._type)
            name = str(metric._name) + ("_total" if kind == "counter" else "")
            rows.append((name, kind, tuple(metric._labelnames), str(metric._documentation)))
    return sorted(rows)


def metrics_page() -> str:
    lines = [
        "# Metrics",
        "",
        "`GET /metrics` serves these in the Prometheus text format. They carry counts, reasons and",
        "transport names, never personal data. See [Logs and metrics](../operations/metrics.md) for how to use them.",
        "",
        "| metric | type | labels | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, kind, labels, doc in metric_rows():
        label_text = ", ".join(f"`{label}`" for label in labels) or "none"
        lines.append(f"| `{name}` | {kind} | {label_text} | {doc} |")
    return "\n".join(lines) + "\n"
