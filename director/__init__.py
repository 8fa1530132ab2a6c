"""The director's domain logic: planning, prompt refinement, learning. Pure; no Kafka, no I/O."""
