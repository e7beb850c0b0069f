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

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("gifting.metrics")

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)

# The HTTP API's settlement runs, read from Postgres when scraped: ``gifting
# settle`` is a short cron job, so counting in its own process would be lost.
SQL_SETTLEMENT_RUNS = """
SELECT count(*) AS runs, extract(epoch FROM max(cutoff))::float8 AS last_cutoff,
       extract(epoch FROM max(created_at))::float8 AS last_run
  FROM settlement_runs
"""


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

    def __init__(self, *, process: bool = True) -> None:
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
        """Reads ``gateway.stats()`` at every scrape; returns a function that stops it."""
        self._stats.gateways.append(gateway)
        return lambda: self._stats.gateways.remove(gateway)

    def watch_hot_state(self, hot: Any) -> None:
        self._stats.hot = hot

    def wire(self, gifts: Any, hot: Any = None) -> None:
        gifts.batch_observer = self.observe_batch
        gifts.outcome_observer = self.observe_gift_outcome
        if hot is not None:
            hot.lag_observer = self.observe_lag
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
