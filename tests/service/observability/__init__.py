"""Tests of logs, redaction, metrics and traces."""
