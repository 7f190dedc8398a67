"""What the three services share at run time: contracts, pure logic, and the Redis and
RabbitMQ adapters. Internal: users import the public API from ``sasfleet``."""
