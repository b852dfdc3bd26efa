"""SWE-bench-style batch work: instances, evaluation (harness-compatible reports) and agent batch runs."""
