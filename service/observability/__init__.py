"""Logs, redaction, metrics and traces: for the receiver and the workers alike."""
