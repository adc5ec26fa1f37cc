"""Prometheus metrics of one node, in a registry of its own (no process-wide registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, node_id: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        labels = {"node": node_id}
        self.node_info = Gauge("chatd_node_info", "This node's id", ["node"], registry=r)
        self.node_info.labels(**labels).set(1)
        self.connections = Gauge("chatd_connections", "Open authenticated WebSockets", registry=r)
        self.frames_in = Counter("chatd_frames_received", "Client frames received", registry=r)
        self.bad_frames = Counter(
            "chatd_bad_frames", "Frames answered bad_frame/unknown_type/invalid", registry=r
        )
        self.messages_sent = Counter(
            "chatd_messages_committed", "Messages committed by this node", registry=r
        )
        self.messages_delivered = Counter(
            "chatd_messages_delivered", "Live msg frames queued to connections", registry=r
        )
        self.gap_fills = Counter("chatd_gap_fills", "Gap fills from storage", registry=r)
        self.messages_filled = Counter(
            "chatd_messages_filled", "Messages delivered by gap fills", registry=r
        )
        self.broker_reconnects = Counter(
            "chatd_broker_reconnects", "Broker reconnections", registry=r
        )
        self.broker_publish_failures = Counter(
            "chatd_broker_publish_failures", "Publications the broker refused", registry=r
        )
        self.broker_connected = Gauge(
            "chatd_broker_connected", "1 while the broker is connected", registry=r
        )
        self.closes = Counter("chatd_closes", "Connections closed, by code", ["code"], registry=r)
        self.errors = Counter("chatd_errors", "Error frames sent, by code", ["code"], registry=r)
        self.send_latency = Histogram(
            "chatd_send_commit_seconds",
            "From a send frame to its commit",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.batch_size = Gauge(
            "chatd_writer_last_batch", "Messages in the last group commit", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
