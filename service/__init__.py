"""The Avionté webhook receiver: authenticate each delivery and publish it to RabbitMQ."""
