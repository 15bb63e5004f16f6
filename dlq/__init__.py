"""The dead-letter store: what the stages could not process, kept, listed and replayed.

The ingest and TA flows publish what they reject to ``torghut.ingest.dlq.v1`` and
``torghut.ta.dlq.v1`` (:class:`torghut.dead_letters.DeadLetter`: reason, error, raw bytes).
Topics expire; an operator needs the records after the fact, grouped, and a way to feed them
back once the bug is fixed. So:

* :mod:`dlq.consumer` copies both topics into Postgres (:mod:`dlq.tables`), counting each
  record under its reason (``torghut_dead_letters_stored_total``);
* :mod:`dlq.store` groups identical records (same topic, stage, reason and raw bytes) into one
  row with first/last seen and a count, and stores the consumer's Kafka positions in the same
  transaction, so a restart neither loses nor double-counts a record;
* :mod:`dlq.replay` re-publishes selected records to the topic they came from and records
  each replay; ``api.dead_letters`` lists them over HTTP.

A package of its own (not under ``torghut/``) because replaying an ingest dead letter runs the
Alpaca decoder of :mod:`operators.alpaca_decode`, and the shared core never imports upwards.

Run: ``python -m dlq consume | list | replay`` (``python -m dlq --help``).
"""
