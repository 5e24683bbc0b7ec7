"""The fault-injection suite: `make faults`."""
