"""Replication as the cluster allows, and the topics that have less of it."""

from __future__ import annotations

import pytest

from foundation.kafka import Replication, declared_topics, fewer_partitions, under_replicated
from foundation.settings import Settings


@pytest.mark.parametrize(("brokers", "factor", "min_insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_replication_defaults_to_what_the_cluster_holds(brokers, factor, min_insync):
    assert Replication.for_cluster(Settings(), brokers) == Replication(factor, min_insync)


def test_replication_settings_win_and_impossible_ones_say_why():
    assert Replication.for_cluster(Settings(replication_factor=2, min_insync_replicas=2), 3) == Replication(2, 2)
    with pytest.raises(ValueError, match="has 1 broker"):
        Replication.for_cluster(Settings(replication_factor=3), 1)
    with pytest.raises(ValueError, match="more than the replication factor"):
        Replication.for_cluster(Settings(replication_factor=2, min_insync_replicas=3), 3)


def test_every_declared_topic_gets_the_replication_and_the_message_limit():
    topics = declared_topics(Settings(topic_prefix="t."), Replication(3, 2))
    assert {t.replication_factor for t in topics} == {3}
    assert {t.topic_configs["min.insync.replicas"] for t in topics} == {"2"}
    assert {t.topic_configs["max.message.bytes"] for t in topics} == {"1048588"}
    assert "t.quality.scored" in {t.name for t in topics} and "t.feedback.submitted.dlq" in {t.name for t in topics}


def test_under_replicated_topics_are_named():
    described = [
        {"topic": "a", "partitions": [{"replicas": [1, 2, 3]}, {"replicas": [1, 2, 3]}]},
        {"topic": "b", "partitions": [{"replicas": [1]}, {"replicas": [2]}]},
    ]
    assert under_replicated(described, Replication(3, 2)) == ["b has 1 replica(s), not 3"]


def test_topics_get_the_partitions_setting_and_dead_letters_one():
    topics = {t.name: t.num_partitions for t in declared_topics(Settings(topic_prefix="t.", topic_partitions=12))}
    assert topics["t.shot.planned"] == topics["t.render.progress"] == topics["t.shot.review"] == 12
    assert topics["t.shot.planned.dlq"] == 1


def test_topics_with_fewer_partitions_than_declared_are_named():
    declared = declared_topics(Settings(topic_prefix="t.", topic_partitions=12))
    described = [{"topic": "t.shot.planned", "partitions": [{}] * 3}, {"topic": "t.quality.scored", "partitions": [{}] * 12}]
    assert fewer_partitions(described, declared) == ["t.shot.planned has 3 partition(s), not 12"]
