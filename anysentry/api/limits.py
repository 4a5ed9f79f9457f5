"""Limits of the ingest api that its clients (the node collector) keep to as well. Nothing is imported
here, so a client can read them without loading the api."""

BATCH_LIMIT = 256  # items per /ingest/batch request (SPEC §8.2)
