"""Prometheus metrics for a node: `/metrics` on its own port, served on the node's event loop.

Every figure is read from the runtime and the gRPC service when Prometheus scrapes, on
the event loop that changes them, so a scrape sees one consistent moment: a stream's
frame counts move from the open streams to the runtime's totals in one step, and the
counters never go back (see `avatar_node.pipeline.totals`).

    avatar_node_sessions_active                      sessions open now (opening ones included)
    avatar_node_sessions_started_total               sessions that started
    avatar_node_sessions_refused_total{reason}       refused before opening (NODE_AT_CAPACITY, NODE_DRAINING...)
    avatar_node_sessions_ended_total{reason}         ended: end_requested, input_closed, node_shutdown, client_cancelled
    avatar_node_frames_{sent,dropped,late,skipped}_total
    avatar_node_live_lag_seconds                     histogram of how late live frames left
    avatar_node_live_lag_max_seconds                 the largest current lag of the open live sessions
    avatar_node_engine_cpu_seconds                   histogram of engine CPU time per frame
    avatar_node_encode_cpu_seconds                   histogram of encoder CPU time per frame
    avatar_node_errors_total{code}                   error statuses returned, by gRPC code
    avatar_node_ready                                1 when a new live session would be admitted
    avatar_node_draining, avatar_node_max_sessions, avatar_node_load
    avatar_node_live_capacity{engine}                live 848x480 sessions the node could hold in all
plus the standard process_* figures (CPU, memory, open files).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .pipeline.runtime import AvatarRuntime
from .pipeline.totals import Histogram

log = logging.getLogger(__name__)

PREFIX = "avatar_node"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: A request line and headers larger than this are refused (nothing here needs more).
MAX_REQUEST_BYTES = 16 * 1024


def _histogram(name: str, doc: str, histogram: Histogram, scale: float = 1.0) -> HistogramMetricFamily:
    buckets = [(repr(bound * scale) if bound != float("inf") else "+Inf", count)
               for bound, count in histogram.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=histogram.total * scale)


def _by_label(name: str, doc: str, label: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class NodeCollector(Collector):
    """Reads a runtime (and the gRPC service's error counts) at each scrape."""

    def __init__(self, runtime: AvatarRuntime, errors: Counter[str] | None = None) -> None:
        self.runtime = runtime
        self.errors: Counter[str] = errors if errors is not None else Counter()

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        status = runtime.status()
        streams = list(runtime.streams)
        frames = runtime.totals.with_open(s.counters.figures() for s in streams)

        yield GaugeMetricFamily(f"{PREFIX}_sessions_active", "Sessions open now, opening ones included.",
                                value=status.active_sessions)
        yield CounterMetricFamily(f"{PREFIX}_sessions_started", "Sessions that started.", value=runtime.started)
        yield _by_label(f"{PREFIX}_sessions_refused", "Sessions refused before they opened, by reason.",
                        "reason", runtime.refused)
        yield _by_label(f"{PREFIX}_sessions_ended", "Sessions ended, by reason.", "reason", runtime.ended)
        for kind, value, doc in (
            ("sent", frames.frames_sent, "Frames delivered to clients."),
            ("dropped", frames.frames_dropped, "Live frames dropped for a client that read too slowly."),
            ("late", frames.frames_late, "Live frames delivered more than one frame period late."),
            ("skipped", frames.frames_skipped, "Live frames repeated because rendering fell behind."),
        ):
            yield CounterMetricFamily(f"{PREFIX}_frames_{kind}", doc, value=value)
        yield _histogram(f"{PREFIX}_live_lag_seconds", "How late live frames left, in seconds.", frames.lag_s)
        live_lags = [s.counters.lag_s for s in streams if s.live]
        yield GaugeMetricFamily(f"{PREFIX}_live_lag_max_seconds", "The largest current lag of open live sessions.",
                                value=max(live_lags, default=0.0))
        yield _histogram(f"{PREFIX}_engine_cpu_seconds", "Engine CPU time per frame, in seconds.",
                         frames.engine_cpu_ms, 1e-3)
        yield _histogram(f"{PREFIX}_encode_cpu_seconds", "Encoder CPU time per frame, in seconds.",
                         frames.encode_cpu_ms, 1e-3)
        yield _by_label(f"{PREFIX}_errors", "Error statuses returned, by gRPC code.", "code", self.errors)
        yield GaugeMetricFamily(f"{PREFIX}_ready", "1 when a new live session on the default engine would be "
                                "admitted (the readiness the health service reports).", value=int(status.ready))
        yield GaugeMetricFamily(f"{PREFIX}_draining", "1 while the node drains.", value=int(status.draining))
        yield GaugeMetricFamily(f"{PREFIX}_max_sessions", "Sessions the node takes at once.",
                                value=status.max_sessions)
        yield GaugeMetricFamily(f"{PREFIX}_load", "Planned share of the CPU cores used by live sessions.",
                                value=status.load)
        capacity = GaugeMetricFamily(f"{PREFIX}_live_capacity", "Live 848x480 sessions at the engine's native "
                                     "fps the node could hold in all.", labels=["engine"])
        for engine in status.engines:
            capacity.add_metric([engine.info.name], engine.live_capacity)
        yield capacity


def node_registry(runtime: AvatarRuntime, errors: Counter[str] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(runtime, errors))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """A minimal HTTP/1.1 server for `GET /metrics`, on the running event loop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10.0):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = (head.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""])[:2]
            if method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"only GET\n", "text/plain"
            elif path.split("?", 1)[0] == "/metrics":
                status, body, kind = "200 OK", generate_latest(self.registry), CONTENT_TYPE
            elif path == "/":
                status, body, kind = "200 OK", b"avatar node: metrics at /metrics\n", "text/plain"
            else:
                status, body, kind = "404 Not Found", b"not found; metrics are at /metrics\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1") + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:  # a scrape must never take the node down
            log.exception("serving /metrics failed")
        finally:
            writer.close()
