"""The supervisor: watches deadlines in Redis and recovers overdue steps."""
