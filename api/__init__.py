"""Tower's HTTP API (the seed's Tower service on port 8328): FastAPI over the topics and projections.

Writes produce events (the pipeline does the work); reads come from the PostgreSQL projections;
live progress comes from a Kafka consumer. Build it with :func:`api.app.create_app`.
"""
