"""Prometheus metrics, in the text exposition format, for the loopback admin listener.

Example::

    >>> m = Metrics(); m.request("ward", "/v1/models", 200, 0.004)
    >>> "citadel_gateway_requests_total" in m.render(audit_healthy=True, audit_written=1)
    True
"""

from __future__ import annotations

from collections import Counter

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _labels(**labels) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


class Metrics:
    def __init__(self):
        self.requests: Counter = Counter()  # (client, route, status)
        self.refusals: Counter = Counter()  # reason
        self.phi: Counter = Counter()  # (kind, action)
        self.upstream_errors: Counter = Counter()  # kind
        self.connections_refused: Counter = Counter()  # the limit hit: "total" or "per source"
        self.streams: Counter = Counter()  # outcome: completed, cut by client, cut by upstream
        self.audit_suppressed = 0  # refusals over their source's audit budget (counted in summaries)
        self.replica_requests: Counter = Counter()  # (model, replica): attempts sent to it
        self.failovers: Counter = Counter()  # (model, replica, reason): attempts taken elsewhere, unsent
        self.ejections: Counter = Counter()  # (model, replica): taken out of rotation
        self.buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

    def request(self, client: str | None, route: str | None, status: int, seconds: float) -> None:
        self.requests[(client or "-", route or "-", status)] += 1
        self.latency_sum += seconds
        self.latency_count += 1
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1

    def render(self, *, audit_healthy: bool, audit_written: int, audit_failures: int = 0, connections_open: int = 0,
               offloaded: int = 0, replicas: tuple = ()) -> str:
        """The exposition; `replicas`: (model, replica, in rotation, requests outstanding) for each."""
        out = ["# HELP citadel_gateway_requests_total Requests answered, by client, route and status.",
               "# TYPE citadel_gateway_requests_total counter"]
        out += [f"citadel_gateway_requests_total{_labels(client=c, route=r, status=s)} {n}"
                for (c, r, s), n in sorted(self.requests.items())]
        out += ["# HELP citadel_gateway_refusals_total Requests refused by the gateway, by reason.",
                "# TYPE citadel_gateway_refusals_total counter"]
        out += [f"citadel_gateway_refusals_total{_labels(reason=r)} {n}" for r, n in sorted(self.refusals.items())]
        out += ["# HELP citadel_gateway_phi_detections_total Identifiers found in prompts, by kind and action.",
                "# TYPE citadel_gateway_phi_detections_total counter"]
        out += [f"citadel_gateway_phi_detections_total{_labels(kind=k, action=a)} {n}"
                for (k, a), n in sorted(self.phi.items())]
        out += ["# HELP citadel_gateway_upstream_errors_total Model server failures, by kind.",
                "# TYPE citadel_gateway_upstream_errors_total counter"]
        out += [f"citadel_gateway_upstream_errors_total{_labels(kind=k)} {n}" for k, n in sorted(self.upstream_errors.items())]
        out += ["# HELP citadel_gateway_request_seconds Time from request head to the last byte answered.",
                "# TYPE citadel_gateway_request_seconds histogram"]
        out += [f'citadel_gateway_request_seconds_bucket{{le="{b}"}} {n}' for b, n in zip(BUCKETS, self.buckets, strict=True)]
        out += [f'citadel_gateway_request_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                f"citadel_gateway_request_seconds_sum {self.latency_sum:.6f}",
                f"citadel_gateway_request_seconds_count {self.latency_count}",
                "# HELP citadel_gateway_audit_log_healthy 1 when the last audit record was written.",
                "# TYPE citadel_gateway_audit_log_healthy gauge",
                f"citadel_gateway_audit_log_healthy {1 if audit_healthy else 0}",
                "# HELP citadel_gateway_audit_records_total Audit records written since start.",
                "# TYPE citadel_gateway_audit_records_total counter",
                f"citadel_gateway_audit_records_total {audit_written}",
                "# HELP citadel_gateway_audit_write_failures_total Audit records that could not be written.",
                "# TYPE citadel_gateway_audit_write_failures_total counter",
                f"citadel_gateway_audit_write_failures_total {audit_failures}"]
        out += _family("connections_refused_total", "counter", "Connections closed at accept, by the limit they hit.",
                       "limit", self.connections_refused)
        out += _family("streams_total", "counter", "Streamed answers, by how they ended.", "outcome", self.streams)
        out += _single("connections_open", "gauge", "Client connections open now.", connections_open)
        out += _single("audit_suppressed_total", "counter",
                       "Refusals over their source's audit budget, counted in summary records.", self.audit_suppressed)
        out += _single("offloaded_total", "counter", "Request bodies screened in a worker process.", offloaded)
        replica = ("model", "replica")
        out += _labelled("replica_requests_total", "counter", "Attempts sent to each replica of a model.", replica,
                         self.replica_requests)
        out += _labelled("replica_failovers_total", "counter",
                         "Attempts that reached no model server on a replica and were taken to another, by why.",
                         (*replica, "reason"), self.failovers)
        out += _labelled("replica_ejections_total", "counter", "Times a replica was taken out of rotation.", replica,
                         self.ejections)
        out += _labelled("replica_in_rotation", "gauge", "1 while a replica takes requests, 0 while ejected.", replica,
                         {(m, r): int(healthy) for m, r, healthy, _ in replicas})
        out += _labelled("replica_outstanding", "gauge", "Requests a replica is answering now.", replica,
                         {(m, r): n for m, r, _, n in replicas})
        return "\n".join(out) + "\n"


def _family(name: str, kind: str, help_text: str, label: str, counts: Counter) -> list[str]:
    return _labelled(name, kind, help_text, (label,), {(key,): n for key, n in counts.items()})


def _labelled(name: str, kind: str, help_text: str, labels: tuple[str, ...], counts: dict) -> list[str]:
    """A metric family whose series are keyed by tuples of `labels`' values."""
    full = f"citadel_gateway_{name}"
    return [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}",
            *(f"{full}{_labels(**dict(zip(labels, key, strict=True)))} {n}" for key, n in sorted(counts.items()))]


def _single(name: str, kind: str, help_text: str, value: float) -> list[str]:
    full = f"citadel_gateway_{name}"
    return [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}", f"{full} {value}"]
