"""``python -m bench.compare``: SAS Fleet beside Celery, Dramatiq and taskiq (not installed;
run from the repository root). See docs/benchmarks.md."""
