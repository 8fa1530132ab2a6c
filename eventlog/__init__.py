"""The topics read as a log, for people and tools: following a scene (``follow``), dead letters
and their redrive (``dlq``), and replaying the learning topics into a database (``replay``)."""
