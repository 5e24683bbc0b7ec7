"""Tests of the durable spool."""
