"""Kafka administration that is not a Bytewax operator: the topic spec and its applier
(:mod:`torghut.kafka.topics`). The flows' sources and sinks live in :mod:`operators`."""
