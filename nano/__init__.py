"""loopcoder-nano: generated tasks, gold trajectories, training data and evaluation for the small PLT."""
