"""loopcoder-nano: generated tasks, gold trajectories, training data and evaluation for the small PLT.

Research code, imported from the repository root and not installed with the package.
"""
