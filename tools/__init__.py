"""Operator tools built on the public API: the demo and the benchmark."""
