"""Prometheus metrics: one registry per process, fed by the services' observer hooks.

Owns every metric name this service exposes (docs/operations.md explains each).
The wallet and the rooms never import this module: they expose plain hooks
(``GiftService.batch_observer``, ``outcome_observer``, ``HotState.lag_observer``)
and counters (``Gateway.stats()``, ``HotState.stats``) that are wired or read
here. Facts that live in Postgres (settlement runs) are read when scraped.

Must never: label by user, stream or gift id (unbounded cardinality), or block
the gift path (observers only increment in-memory counters).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("gifting.metrics")
trace_log = logging.getLogger("gifting.trace")  # sampled gifts, at debug

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)
# Stage timings of the gift path and the fan-out: 0.1 ms to 2 s.
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

# A gift's way through one process, in order (``gifting_gift_stage_seconds``, per gift).
GIFT_STAGES = ("receive_to_enqueue", "enqueue_to_start", "start_to_commit", "commit_to_ack", "receive_to_ack")
# Per batch, in the process that committed it.
BATCH_STAGES = ("batch_window", "batch_slot_wait", "commit_to_apply_start", "commit_to_publish")
# Per published batch of one room, in each gateway that delivered it (wall clock across processes).
FANOUT_STAGES = ("publish_to_receive", "receive_to_first_write", "first_to_last_write", "commit_to_first_write",
                 "commit_to_last_write")

# The HTTP API's settlement runs, read from Postgres when scraped: ``gifting
# settle`` is a short cron job, so counting in its own process would be lost.
SQL_SETTLEMENT_RUNS = """
SELECT count(*) AS runs, extract(epoch FROM max(cutoff))::float8 AS last_cutoff,
       extract(epoch FROM max(created_at))::float8 AS last_run
  FROM settlement_runs
"""


class StageHistogram:
    """A histogram cheap enough for every gift: one bisect and two additions, no lock.

    prometheus_client's ``Histogram.observe`` costs ~1.2 µs (a lock and a loop over
    the buckets); this costs ~0.15 µs. Single-threaded use only (the event loop).
    ``counts[i]`` counts values <= ``bounds[i]``, not cumulative; the last is +Inf.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = STAGE_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, cumulative count), +Inf last."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), float(running)))
        return out


def quantile(bounds: Sequence[float], counts: Sequence[float], q: float) -> float:
    """The q-quantile of a histogram (non-cumulative ``counts``, one more than ``bounds``), in seconds.

    Linear inside the bucket, as Prometheus's ``histogram_quantile`` does; a quantile
    in the +Inf bucket is reported as the highest bound. NaN when empty.
    """
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = q * total
    running = 0.0
    for i, n in enumerate(counts):
        if n and running + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lo = 0.0 if i == 0 else float(bounds[i - 1])
            return lo + (float(bounds[i]) - lo) * max(0.0, rank - running) / n
        running += n
    return float(bounds[-1])


def summarize(bounds: Sequence[float], counts: Sequence[float], total: float) -> dict[str, Any]:
    """One stage for a /stats view: count, mean and quantiles in milliseconds."""
    n = sum(counts)
    if n <= 0:
        return {"count": 0}
    return {"count": int(n), "mean_ms": round(total / n * 1000, 3),
            **{f"p{label}_ms": round(quantile(bounds, counts, q) * 1000, 3)
               for label, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("999", 0.999))}}


class Stages:
    """The stage histograms of one process and the hooks that fill them.

    ``on_gift`` (the gateway, once per acknowledged gift), ``on_window`` (the gift
    service, per batch), ``on_publish`` (the hot-state applier, per batch) and
    ``on_delivery`` (the fan-out, per room and published batch). A gift whose seq
    is a multiple of ``sample`` (or that took longer than ``slow`` end to end) is
    logged at debug on ``gifting.trace`` with its stage times: its trace id is the
    gift's id (``g_<stream>_<seq>``), the same in every process's log lines.
    """

    def __init__(self, *, sample: int = 1000, slow: float = 0.5) -> None:
        self.gift = {name: StageHistogram() for name in GIFT_STAGES}
        self.batch = {name: StageHistogram() for name in BATCH_STAGES}
        self.fanout = {name: StageHistogram() for name in FANOUT_STAGES}
        self.sample = sample
        self.slow = slow
        self.spans: Callable[[Any], None] | None = None  # OpenTelemetry, when enabled

    def _sampled(self, lo: int, hi: int) -> bool:
        return self.sample > 0 and hi // self.sample * self.sample >= lo

    def on_gift(self, t: Any) -> None:
        g = self.gift
        total = t.acked - t.received
        if t.committed:
            g["receive_to_enqueue"].observe(t.enqueued - t.received)
            g["enqueue_to_start"].observe(t.started - t.enqueued)
            g["start_to_commit"].observe(t.committed - t.started)
            g["commit_to_ack"].observe(t.acked - t.committed)
        g["receive_to_ack"].observe(total)
        if (self._sampled(t.seq, t.seq) or total > self.slow) and trace_log.isEnabledFor(logging.DEBUG):
            trace_log.debug("gift g_%d_%d acked in %.2f ms", t.stream_id, t.seq, total * 1000, extra={
                "trace": f"g_{t.stream_id}_{t.seq}", "batch": t.batch,
                **{f"{name}_ms": round(v * 1000, 3) for name, v in (
                    ("receive_to_enqueue", t.enqueued - t.received), ("enqueue_to_start", t.started - t.enqueued),
                    ("start_to_commit", t.committed - t.started), ("commit_to_ack", t.acked - t.committed))}})
        if self.spans is not None and self._sampled(t.seq, t.seq):
            self.spans(t)

    def on_window(self, window: float, slot_wait: float) -> None:
        self.batch["batch_window"].observe(window)
        self.batch["batch_slot_wait"].observe(slot_wait)

    def on_publish(self, commit_to_publish: float, queued: float) -> None:
        self.batch["commit_to_publish"].observe(max(0.0, commit_to_publish))
        self.batch["commit_to_apply_start"].observe(queued)

    def on_delivery(self, stream_id: int, lo: int, hi: int, committed: float, published: float,
                    received: float, first: float, last: float) -> None:
        f = self.fanout
        if published:
            f["publish_to_receive"].observe(max(0.0, received - published))
        f["receive_to_first_write"].observe(max(0.0, first - received))
        f["first_to_last_write"].observe(last - first)
        f["commit_to_first_write"].observe(max(0.0, first - committed))
        f["commit_to_last_write"].observe(max(0.0, last - committed))
        if (self._sampled(lo, hi) or last - committed > self.slow) and trace_log.isEnabledFor(logging.DEBUG):
            seq = hi // self.sample * self.sample if self._sampled(lo, hi) else hi
            trace_log.debug("gift g_%d_%d on screens %.2f ms after its commit", stream_id, seq,
                            (last - committed) * 1000, extra={
                                "trace": f"g_{stream_id}_{seq}", "seqs": f"{lo}-{hi}",
                                "commit_to_publish_ms": round((published - committed) * 1000, 3) if published else None,
                                "publish_to_receive_ms": round((received - published) * 1000, 3) if published else None,
                                "receive_to_first_write_ms": round((first - received) * 1000, 3),
                                "first_to_last_write_ms": round((last - first) * 1000, 3)})

    def families(self) -> Iterator[Metric]:
        for name, doc, group in (
                ("gifting_gift_stage_seconds", "A gift's stages in this process, per gift (WebSocket senders).",
                 self.gift),
                ("gifting_gift_batch_stage_seconds", "Per gift batch: its window, its wait for a lane slot, "
                 "commit to the hot-state apply starting and to its publish in Redis.", self.batch),
                ("gifting_fanout_stage_seconds", "Per room and published batch, in the gateway that delivered it: "
                 "publish, receive, first and last socket write (wall clock across processes).", self.fanout)):
            family = HistogramMetricFamily(name, doc, labels=["stage"])
            for stage, h in group.items():
                family.add_metric([stage], h.cumulative(), sum_value=h.total)
            yield family

    def summary(self) -> dict[str, dict[str, Any]]:
        """The /stats view: every stage with count, mean and p50/p90/p99/p999 in milliseconds."""
        return {group: {stage: summarize(h.bounds, h.counts, h.total) for stage, h in hs.items()}
                for group, hs in (("gift", self.gift), ("batch", self.batch), ("fanout", self.fanout))}


class _StagesCollector(Collector):
    def __init__(self, stages: Stages) -> None:
        self.stages = stages

    def collect(self) -> Iterable[Metric]:
        yield from self.stages.families()


class _StatsCollector(Collector):
    """Reads live counters from objects that keep their own (gateways, the Redis applier)."""

    def __init__(self) -> None:
        self.gateways: list[Any] = []
        self.hot: Any = None

    def collect(self) -> Iterable[Metric]:
        conns = GaugeMetricFamily("gifting_gateway_connections", "Open WebSocket connections.",
                                  labels=["gateway"])
        rooms = GaugeMetricFamily("gifting_gateway_rooms", "Live rooms with at least one viewer on this gateway.",
                                  labels=["gateway"])
        delivered = CounterMetricFamily("gifting_fanout_deliveries", "Gift frames written to viewers' sockets.",
                                        labels=["gateway"])
        slow = CounterMetricFamily("gifting_slow_client_disconnects",
                                   "Viewers closed with 4408 because they fell behind their room.",
                                   labels=["gateway"])
        inflight = GaugeMetricFamily("gifting_gateway_gifts_in_flight",
                                     "send_gift requests waiting for their commit.", labels=["gateway"])
        for gw in self.gateways:
            try:
                s = gw.stats()
            except Exception:  # a scrape never fails over one source
                log.warning("gateway stats unavailable", exc_info=True)
                continue
            gid = str(s.get("gateway", "?"))
            conns.add_metric([gid], s.get("connections", 0))
            rooms.add_metric([gid], s.get("rooms", 0))
            delivered.add_metric([gid], s.get("delivered", 0))
            slow.add_metric([gid], s.get("cut_slow", 0))
            inflight.add_metric([gid], s.get("gifts_in_flight", 0))
        yield from (conns, rooms, delivered, slow, inflight)
        if self.hot is not None:
            hot = CounterMetricFamily("gifting_hot_state_events",
                                      "Redis hot-state applier: gifts applied, backfilled from Postgres, rooms "
                                      "rebuilt, apply errors, batches dropped to the sweeper.", labels=["kind"])
            for kind, value in sorted(self.hot.stats.items()):
                hot.add_metric([kind], value)
            yield hot


SQL_BATTLES = "SELECT status, count(*)::bigint AS n FROM battles GROUP BY status"
BATTLE_STATUSES = ("invited", "live", "ended", "declined", "cancelled", "expired")


class _BattleCollector(Collector):
    """Battle room messages: published by this process's API side, written to rooms by its gateways."""

    def __init__(self, stats: _StatsCollector) -> None:
        self.stats = stats
        self.publisher: Any = None

    def collect(self) -> Iterable[Metric]:
        sent = CounterMetricFamily("gifting_battle_score_messages",
                                   "Battle score updates published to rooms by this process (each room once).")
        sent.add_metric([], getattr(self.publisher, "score_messages", 0))
        yield sent
        rooms = CounterMetricFamily("gifting_battle_room_messages",
                                    "battle messages written to rooms by this gateway (not per viewer).",
                                    labels=["gateway"])
        for gw in self.stats.gateways:
            rooms.add_metric([str(gw.gateway_id)], getattr(gw.fanout, "battle_messages", 0))
        yield rooms


class Metrics:
    """Every metric of one process, in a registry of its own (tests run many in one process)."""

    def __init__(self, *, process: bool = True, trace_sample: int = 1000, trace_log: bool = False,
                 otel: bool = False) -> None:
        disable_created_metrics()  # ``*_created`` series double the output and nobody alerts on them
        self.registry = r = CollectorRegistry()
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.gifts_committed = Counter("gifting_gifts_committed", "Gifts durably committed.", registry=r)
        self.gifts_replayed = Counter("gifting_gifts_replayed",
                                      "Gift requests answered from an earlier commit (same idempotency key).",
                                      registry=r)
        self.gifts_rejected = Counter("gifting_gifts_rejected", "Gift requests refused, by error code.",
                                      ["reason"], registry=r)
        self.batch_size = Histogram("gifting_gift_batch_size", "Gift requests per committed batch.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.commit_seconds = Histogram("gifting_gift_commit_seconds",
                                        "Time to commit one gift batch in Postgres (retries included).",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.purchases = Counter("gifting_purchases", "Purchase requests, by outcome (created, replayed).",
                                 ["outcome"], registry=r)
        self.webhooks = Counter("gifting_webhook_events",
                                "Payment webhook deliveries, by event type and outcome.",
                                ["type", "outcome"], registry=r)
        self.outbox_lag = Histogram("gifting_outbox_lag_seconds",
                                    "From a gift batch's commit in Postgres to its publication in Redis.",
                                    buckets=LAG_BUCKETS, registry=r)
        self.http_requests = Counter("gifting_http_requests", "HTTP requests, by route and status.",
                                     ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram("gifting_http_request_seconds", "HTTP request duration, by route.",
                                      ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.settlement_runs = Gauge("gifting_settlement_runs",
                                     "Settlement runs recorded in Postgres (read when scraped).", registry=r)
        self.settlement_last_cutoff = Gauge("gifting_settlement_last_cutoff_timestamp_seconds",
                                            "Cutoff of the newest settlement run, Unix time.", registry=r)
        self.settlement_last_run = Gauge("gifting_settlement_last_run_timestamp_seconds",
                                         "When the newest settlement run committed, Unix time.", registry=r)
        self._stats = _StatsCollector()
        r.register(self._stats)
        self.stages = Stages(sample=trace_sample)
        if trace_log:
            logging.getLogger("gifting.trace").setLevel(logging.DEBUG)
        r.register(_StagesCollector(self.stages))
        if otel:
            from gifting.otel import gift_spans  # imported only when asked for

            self.stages.spans = gift_spans()
        self.battles = Gauge("gifting_battles", "Battles by status (read from Postgres when scraped).", ["status"],
                             registry=r)
        self.battle_end_lag = Histogram("gifting_battle_end_lag_seconds",
                                        "From a battle's ends_at to the commit of its end (ended by time).",
                                        buckets=LAG_BUCKETS, registry=r)
        self._battle_stats = _BattleCollector(self._stats)
        r.register(self._battle_stats)

    # ---- hooks the services call -------------------------------------------------
    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def observe_gift_outcome(self, code: str) -> None:
        if code == "committed":
            self.gifts_committed.inc()
        elif code == "replayed":
            self.gifts_replayed.inc()
        else:
            self.gifts_rejected.labels(code).inc()

    def observe_lag(self, seconds: float) -> None:
        self.outbox_lag.observe(max(0.0, seconds))

    def watch_gateway(self, gateway: Any) -> Callable[[], None]:
        """Reads ``gateway.stats()`` at every scrape and times its gifts; returns a function that stops it."""
        self._stats.gateways.append(gateway)
        gateway.gift_observer = self.stages.on_gift
        gateway.fanout.delivery_observer = self.stages.on_delivery
        return lambda: self._stats.gateways.remove(gateway)

    def watch_hot_state(self, hot: Any) -> None:
        self._stats.hot = hot

    def wire(self, gifts: Any, hot: Any = None) -> None:
        gifts.batch_observer = self.observe_batch
        gifts.outcome_observer = self.observe_gift_outcome
        gifts.window_observer = self.stages.on_window
        if hot is not None:
            hot.lag_observer = self.observe_lag
            hot.publish_observer = self.stages.on_publish
            self.watch_hot_state(hot)

    def wire_battles(self, battles: Any, publisher: Any = None) -> None:
        battles.end_observer = lambda _battle, lag: self.battle_end_lag.observe(max(0.0, lag))
        self._battle_stats.publisher = publisher

    async def refresh_battles(self, pool: Any) -> None:
        try:
            rows = {r["status"]: r["n"] for r in await pool.fetch(SQL_BATTLES)}
        except Exception as e:
            log.debug("battle metrics unavailable: %s", e)
            return
        for status in BATTLE_STATUSES:
            self.battles.labels(status).set(rows.get(status, 0))

    # ---- scraping -------------------------------------------------------------------
    async def refresh_from_postgres(self, pool: Any) -> None:
        try:
            row = await pool.fetchrow(SQL_SETTLEMENT_RUNS)
        except Exception as e:  # no settlement schema yet, or Postgres away: /readyz says so
            log.debug("settlement metrics unavailable: %s", e)
            return
        self.settlement_runs.set(row["runs"] or 0)
        if row["last_cutoff"] is not None:
            self.settlement_last_cutoff.set(row["last_cutoff"])
        if row["last_run"] is not None:
            self.settlement_last_run.set(row["last_run"])
        await self.refresh_battles(pool)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def names(self) -> Iterator[str]:
        for metric in self.registry.collect():
            yield metric.name
