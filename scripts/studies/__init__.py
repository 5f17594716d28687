"""Research studies: one question each, answered with the benchmarks' code (pages beside them)."""
