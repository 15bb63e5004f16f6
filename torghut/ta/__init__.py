"""Pure technical-analysis core: microbar aggregation and incremental indicators (no I/O)."""
