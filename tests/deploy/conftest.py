"""Fixtures of the deploy/ tests (the helpers live in deploy_support.py)."""

from deploy_support import passwords, private_rabbitmq, private_redis, workdir

__all__ = ["passwords", "private_rabbitmq", "private_redis", "workdir"]
