"""What the tests use to make trouble: cut links, a small disk, nodes, policies, bare AMQP."""
