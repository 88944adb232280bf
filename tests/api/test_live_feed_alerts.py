"""The live feed fills the alert log (clients or not); its figures reach /metrics."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from api.alert_log import AlertLog
from api.live.collector import LiveCollector
from api.live.feed import KafkaLiveFeed
from api.live.hub import LiveHub
from tables.alerting import encode_alert
from tests.api.alert_records import T0, firing, follow_up


def _feed(log: AlertLog | None) -> KafkaLiveFeed:
    return KafkaLiveFeed(
        LiveHub(), bootstrap="127.0.0.1:1", probe_topic="p", alerts_topic="a", alert_log=log
    )


def test_alert_records_go_to_the_log_and_out_as_alert_messages() -> None:
    log = AlertLog(capacity=2, clock=lambda: T0 + 100)
    feed = _feed(log)
    fired = firing(1)
    (message,) = feed.messages_of("a", encode_alert(fired))
    assert message.kind == "alert"
    assert json.loads(message.text)["status"] == "firing"
    (message,) = feed.messages_of("a", encode_alert(follow_up(fired, "resolved", T0 + 50)))
    assert json.loads(message.text)["status"] == "resolved"  # transitions reach clients
    assert [e.state for e in log.query()] == ["resolved"]
    assert feed.messages_of("a", b"{not an alert") == [] and feed.invalid == 1
    assert len(log) == 1 and feed.alerts == 2


def test_the_collector_exports_the_log_against_its_bound() -> None:
    log = AlertLog(capacity=2, clock=lambda: T0 + 100)
    feed = _feed(log)
    registry = CollectorRegistry()
    registry.register(LiveCollector(feed.hub, feed))
    for n in (1, 2, 3):
        feed.messages_of("a", encode_alert(firing(n)))
    value = registry.get_sample_value
    assert value("egresswatch_alert_log_episodes", {"state": "firing"}) == 2
    assert value("egresswatch_alert_log_episodes", {"state": "resolved"}) == 0
    assert value("egresswatch_alert_log_capacity_episodes") == 2
    assert value("egresswatch_alert_log_dropped_episodes_total") == 1


def test_without_a_log_the_collector_has_no_alert_figures() -> None:
    registry = CollectorRegistry()
    feed = _feed(None)
    registry.register(LiveCollector(feed.hub, feed))
    assert registry.get_sample_value("egresswatch_alert_log_capacity_episodes") is None
