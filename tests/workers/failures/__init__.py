"""Consumers that fail on purpose, in the ways the worker tests need."""
