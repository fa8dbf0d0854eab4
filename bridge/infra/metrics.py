"""Prometheus metrics, one registry per runtime so several bridges can live in one test process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.alerts_accepted = Counter(
            "sosbridge_alerts_accepted", "Alerts accepted", ["transport", "kind", "outcome"], registry=r
        )
        self.alerts_rejected = Counter(
            "sosbridge_alerts_rejected", "Messages rejected", ["transport", "reason"], registry=r
        )
        self.duplicates = Counter("sosbridge_duplicates", "Duplicate messages absorbed", ["transport"], registry=r)
        self.deliveries = Counter("sosbridge_deliveries", "Contact delivery attempts", ["sink", "outcome"], registry=r)
        self.e2e_latency = Histogram(
            "sosbridge_end_to_end_seconds",
            "From the bridge receiving an alert to the platform accepting its first contact",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.loop_lag = Histogram(
            "sosbridge_event_loop_lag_seconds",
            "How much later than asked the event loop ran a timer (sampled every 0.1 s): every step waits this long",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.outbox_depth = Gauge("sosbridge_outbox_depth", "Contacts waiting for delivery", registry=r)
        self.outbox_oldest_age = Gauge(
            "sosbridge_outbox_oldest_age_seconds",
            "Age of the oldest contact not yet delivered (0 when none waits): how far behind the platform is",
            registry=r,
        )
        self.degraded = Gauge("sosbridge_degraded", "1 while an operational alarm is raised", registry=r)
        self.frames_unmatched = Counter(
            "sosbridge_frames_unmatched", "Frames from registered devices that no mapping of their profile covers",
            ["profile"], registry=r,
        )
        self.frames_coalesced = Counter(
            "sosbridge_frames_coalesced", "Non-emergency frames replaced by a newer one from the same device",
            ["transport"], registry=r,
        )
        self.frames_partial = Counter(
            "sosbridge_frames_partial",
            "Frames decoded without a descriptive part that did not parse (named in decode_warnings)",
            ["profile"], registry=r,
        )
        self.frames_held = Counter(
            "sosbridge_frames_level_held", "Repeats of a level already reported (edge, not level)",
            ["profile"], registry=r,
        )
        self.alarms = Counter("sosbridge_operational_alarms", "Operational alarms raised", ["reason"], registry=r)
        self._counters: dict[str, Counter] | None = None  # by name, for add_counts

    def accepted(self, transport: str, kind: str, outcome: str) -> None:
        self.alerts_accepted.labels(transport, kind, outcome).inc()

    def rejected(self, transport: str, reason: str) -> None:
        self.alerts_rejected.labels(transport, reason).inc()

    def rejected_count(self, transport: str, reason: str) -> float:
        value = self.registry.get_sample_value(
            "sosbridge_alerts_rejected_total", {"transport": transport, "reason": reason}
        )
        return value or 0.0

    def unmatched(self, profile: str) -> None:
        self.frames_unmatched.labels(profile).inc()

    def unmatched_count(self, profile: str) -> float:
        value = self.registry.get_sample_value("sosbridge_frames_unmatched_total", {"profile": profile})
        return float(value or 0.0)

    def partial_count(self, profile: str) -> float:
        value = self.registry.get_sample_value("sosbridge_frames_partial_total", {"profile": profile})
        return float(value or 0.0)

    def duplicate(self, transport: str) -> None:
        self.duplicates.labels(transport).inc()

    def counter_totals(self) -> dict[tuple[str, tuple[str, ...]], float]:
        """Every counter's value per label set: what an intake process tells its parent (`add_counts`)."""
        totals: dict[tuple[str, tuple[str, ...]], float] = {}
        for family in self.registry.collect():
            if family.type != "counter":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals[(family.name, tuple(sample.labels.values()))] = sample.value
        return totals

    def add_counts(self, counts: list[tuple[str, tuple[str, ...], float]]) -> None:
        """Counts made in an intake process, added to this process's counters of the same name."""
        if self._counters is None:
            counters = [metric for metric in vars(self).values() if isinstance(metric, Counter)]
            self._counters = {next(iter(counter.describe())).name: counter for counter in counters}
        for name, labels, amount in counts:
            counter = self._counters.get(name)
            if counter is not None:
                (counter.labels(*labels) if labels else counter).inc(amount)

    def render(self) -> bytes:
        return generate_latest(self.registry)
