"""The foundation every other layer stands on: settings, Kafka client helpers, the one publisher,
metrics and logging. It imports nothing of Tower's but the event contract (``events``)."""
