"""Benchmarks: our implementation and a faithful re-implementation of RVC's recipe, side by side."""
