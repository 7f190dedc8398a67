"""The scheduler: accepts jobs, dispatches steps to agent pools, advances jobs."""
