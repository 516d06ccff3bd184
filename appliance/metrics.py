"""The appliance's Prometheus metrics: served at /metrics on the admin socket (and on the
metrics socket NGINX's management listener reaches), never on the API listener.

Two kinds of family:
- events, counted as requests end (appliance.middleware.Observe reads each request's
  appliance.observe record), as receipts are written and as engine steps run;
- levels, read from the running objects at scrape time (`_Levels`): the engine's queue and
  sequences, sessions, documents, the journal, the policy, the GPU.

Every label value comes from a fixed set: a route template, a model the appliance serves, a
client id from the policy (or `local` for the settings' own keys), an error code, a status.
No label and no sample carries anything a client sent (tests/integration/test_metrics.py
puts a canary in every field a client controls and looks for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance.auth import LOCAL_PEER, Principal
from appliance.nvml import Nvml
from appliance.observe import RequestRecord

if TYPE_CHECKING:
    from appliance.state import ApplianceState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_MODEL = "none"
QUOTA_CODE = "quota_exceeded"
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def client_label(principal: Principal | None) -> str:
    """The policy's client id, or `local` for the settings' keys; `-` before a key is known."""
    if principal is None:
        return "-"
    return principal.client_id if principal.client_id is not None else LOCAL_PEER


class Metrics:
    def __init__(
        self, *, policy_max_age_s: float, nvml: Callable[[], Nvml | None] = Nvml.open
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "keep_requests", "Requests answered.", ["route", "model", "status"], registry=r
        )
        self.latency = Histogram(
            "keep_request_duration_seconds",
            "End-to-end latency of a request, to its response's (or stream's) last byte.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "keep_time_to_first_token_seconds",
            "Time from a generation request's arrival to its first token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "keep_prompt_tokens", "Prompt and input tokens.", ["model", "client"], registry=r
        )
        self.completion_tokens = Counter(
            "keep_completion_tokens", "Generated tokens.", ["model", "client"], registry=r
        )
        self.rate_limited = Counter(
            "keep_rate_limit_rejections",
            "Requests refused with 429 by a rate limit.",
            ["client", "limit"],
            registry=r,
        )
        self.quota_rejections = Counter(
            "keep_quota_rejections",
            "Requests refused because the client's quota is used up.",
            ["client"],
            registry=r,
        )
        self.receipt_write = Histogram(
            "keep_receipt_write_seconds",
            "Time to sign, journal and fsync one receipt.",
            buckets=_WRITE_BUCKETS,
            registry=r,
        )
        self.receipt_failures = Counter(
            "keep_receipt_write_failures", "Receipts that could not be written.", registry=r
        )
        self.engine_step = Histogram(
            "keep_engine_step_seconds",
            "Time llama.cpp spends on one scheduler step (every decode call in it).",
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self._levels = _Levels(nvml(), policy_max_age_s)
        r.register(self._levels)

    def attach(self, state: ApplianceState) -> None:
        """Read levels from `state` from now on (the lifespan builds it after the app)."""
        self._levels.state = state
        state.receipts.on_write = self.receipt_written
        state.engine.on_step = self.engine_step.observe

    def receipt_written(self, seconds: float, ok: bool) -> None:
        if ok:
            self.receipt_write.observe(seconds)
        else:
            self.receipt_failures.inc()

    def request_ended(
        self, record: RequestRecord, route: str, status: int, principal: Principal | None
    ) -> None:
        model = record.model or NO_MODEL
        client = client_label(principal)
        status = record.error_status or status
        self.requests.labels(route, model, str(status)).inc()
        if record.model is not None:
            self.latency.labels(model).observe(time.perf_counter() - record.started)
        if record.first_token_s is not None:
            self.ttft.labels(model).observe(record.first_token_s)
        if record.prompt_tokens:
            self.prompt_tokens.labels(model, client).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.labels(model, client).inc(record.completion_tokens)
        if record.limit is not None:
            self.rate_limited.labels(client, record.limit).inc()
        elif record.error_code == QUOTA_CODE:
            self.quota_rejections.labels(client).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Levels(Collector):
    """Gauges read from the running appliance at each scrape."""

    def __init__(self, nvml: Nvml | None, policy_max_age_s: float) -> None:
        self.state: ApplianceState | None = None
        self._nvml = nvml
        self._policy_max_age_s = policy_max_age_s

    def collect(self) -> Iterator[Metric]:
        state = self.state
        if state is None:
            return
        yield from self._health(state)
        yield from self._engine(state)
        yield from self._documents(state)
        yield from self._policy(state)
        yield from self._gpu()

    @staticmethod
    def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    def _health(self, state: ApplianceState) -> Iterator[Metric]:
        backends = GaugeMetricFamily(
            "keep_backend_up", "Whether a backend can serve (1) or not (0).", labels=["backend"]
        )
        engine_up, receipts_up = state.engine.alive, state.receipts.healthy
        backends.add_metric(["engine"], float(engine_up))
        backends.add_metric(["receipts"], float(receipts_up))
        yield backends
        yield self._gauge(
            "keep_ready", "Whether the appliance is ready (/readyz).", engine_up and receipts_up
        )
        yield self._gauge("keep_receipts", "Entries in the receipt journal.", len(state.receipts))

    def _engine(self, state: ApplianceState) -> Iterator[Metric]:
        stats, model = state.engine.stats, state.engine.model
        yield self._gauge(
            "keep_queue_depth", "Requests waiting for a KV sequence.", stats.queue_depth
        )
        yield self._gauge("keep_slots_in_use", "KV sequences running a turn.", stats.slots_in_use)
        yield self._gauge("keep_slots", "KV sequences in all (KEEP_SLOTS).", model.n_seq_max)
        yield self._gauge(
            "keep_sessions_open", "Sessions open, ephemeral ones included.", len(state.sessions)
        )
        kv = GaugeMetricFamily(
            "keep_sessions_kv", "Sessions' KV between turns, by where it is.", labels=["state"]
        )
        kv.add_metric(["warm"], stats.warm)
        kv.add_metric(["parked"], stats.parked)
        yield kv
        yield CounterMetricFamily(
            "keep_sessions_kv_dropped",
            "Parked KV dropped for RAM (re-prefilled).",
            value=stats.dropped,
        )

    def _documents(self, state: ApplianceState) -> Iterator[Metric]:
        documents = chunks = held = 0
        for collection in state.sessions.collections():
            documents += len(collection.documents)
            chunks += collection.chunk_count
            held += collection.nbytes
        yield self._gauge("keep_rag_documents", "Documents in sessions' collections.", documents)
        yield self._gauge("keep_rag_chunks", "Chunks in sessions' collections.", chunks)
        yield self._gauge("keep_rag_bytes", "RAM held by sessions' collections.", held)

    def _policy(self, state: ApplianceState) -> Iterator[Metric]:
        access = state.access
        version = access.policy.version if access.policy is not None else 0
        yield self._gauge("keep_policy_version", "The policy in force (0: none).", version)
        if access.pushed_at is not None:
            yield self._gauge(
                "keep_policy_last_push_timestamp_seconds",
                "When control last pushed a policy.",
                access.pushed_at,
            )
        yield self._gauge(
            "keep_policy_age_seconds",
            "Seconds without a policy push from control (since start-up before the first).",
            access.silence_s(),
        )
        yield self._gauge(
            "keep_policy_max_age_seconds",
            "KEEP_POLICY_MAX_AGE_S: the silence after which KeepPolicyStale fires.",
            self._policy_max_age_s,
        )

    def _gpu(self) -> Iterator[Metric]:
        if self._nvml is None:
            return
        used = GaugeMetricFamily("keep_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("keep_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
        busy = GaugeMetricFamily(
            "keep_gpu_utilization_ratio", "Share of time a GPU kernel ran.", labels=["gpu"]
        )
        for reading in self._nvml.read():
            gpu = [str(reading.index)]
            used.add_metric(gpu, reading.memory_used_bytes)
            total.add_metric(gpu, reading.memory_total_bytes)
            busy.add_metric(gpu, reading.utilization)
        yield from (used, total, busy)
