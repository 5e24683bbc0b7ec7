"""Consumers with dedupe on, for the tests of once per message id."""
