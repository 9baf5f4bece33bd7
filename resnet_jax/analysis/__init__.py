"""Experiments over models: sweeps with their tables and curves, and gradient-flow signals."""
