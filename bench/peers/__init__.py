"""The peer systems' producers and worker apps, and the Redis watcher they share."""
