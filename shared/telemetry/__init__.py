"""Logging, tracing and metrics shared by the three services."""
