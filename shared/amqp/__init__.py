"""The RabbitMQ adapter: topology, confirmed publishing, and ack-after-record consuming."""
