"""What the benchmark measures ours against, and the consumers it drains queues with."""
