"""Batch work over many repositories: SWE-bench runs and evaluation (`swebench/`), refactor plans (`refactor.py`)."""
