"""The ReAct core: the loop, its configuration, prompts, trajectory and view, and the run / chat / replay
/ inspect commands (docs/architecture.md)."""
