"""TopicSpec and the declared topics, without a broker (ensure_topics: tests/integration)."""

from __future__ import annotations

import pytest

from pipeline.topics import (
    ALERTS_TOPIC,
    DAY_MS,
    DEAD_LETTER_TOPIC,
    DEFAULT_TOPICS,
    HOUR_MS,
    PROBE_EVENTS_TOPIC,
    TopicMismatch,
    TopicSpec,
    ensure_topics,
)


def test_default_topics() -> None:
    by_name = {spec.name: spec for spec in DEFAULT_TOPICS}
    assert by_name[PROBE_EVENTS_TOPIC].partitions == 8
    assert by_name[PROBE_EVENTS_TOPIC].retention_ms == 24 * HOUR_MS
    assert by_name[DEAD_LETTER_TOPIC].partitions == 1
    assert by_name[DEAD_LETTER_TOPIC].retention_ms == 7 * DAY_MS
    assert by_name[ALERTS_TOPIC].partitions == 1
    assert by_name[ALERTS_TOPIC].retention_ms == 7 * DAY_MS
    assert len(by_name) == len(DEFAULT_TOPICS) == 3


def test_topic_config_includes_retention() -> None:
    spec = TopicSpec("t", partitions=2, retention_ms=1000, config={"cleanup.policy": "compact"})
    assert spec.topic_config() == {"retention.ms": "1000", "cleanup.policy": "compact"}
    assert TopicSpec("t", 1, -1).topic_config() == {"retention.ms": "-1"}


def test_spec_is_frozen_and_hashable() -> None:
    config = {"cleanup.policy": "compact"}
    spec = TopicSpec("t", 1, 1000, config)
    config["cleanup.policy"] = "delete"  # the caller's dict is copied, not shared
    assert spec.config["cleanup.policy"] == "compact"
    with pytest.raises(TypeError):
        spec.config["x"] = "y"  # type: ignore[index]
    assert spec == TopicSpec("t", 1, 1000, {"cleanup.policy": "compact"})
    assert len({spec, TopicSpec("t", 1, 1000, {"cleanup.policy": "compact"})}) == 1


@pytest.mark.parametrize(
    ("name", "partitions", "retention_ms", "config"),
    [
        ("", 1, 1000, {}),
        ("has space", 1, 1000, {}),
        ("..", 1, 1000, {}),
        ("x" * 250, 1, 1000, {}),
        ("ok", 0, 1000, {}),
        ("ok", 1, 0, {}),
        ("ok", 1, -2, {}),
        ("ok", 1, 1000, {"retention.ms": "5"}),
    ],
)
def test_invalid_specs_are_refused(
    name: str, partitions: int, retention_ms: int, config: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        TopicSpec(name, partitions, retention_ms, config)


def test_mismatch_message_names_topic_and_counts() -> None:
    error = TopicMismatch({"a": (2, 4)})
    assert error.mismatches == {"a": (2, 4)}
    assert "a has 4 partitions, spec declares 2" in str(error)


async def test_conflicting_specs_for_one_name_are_refused_before_any_connection() -> None:
    with pytest.raises(ValueError, match="two different specs"):
        await ensure_topics("127.0.0.1:1", [TopicSpec("a", 1, 1000), TopicSpec("a", 2, 1000)])


async def test_no_specs_is_a_no_op() -> None:
    await ensure_topics("127.0.0.1:1", [])
