"""Tests of what the receiver and the consumers share."""
