"""Tests of the operator console, in a real Chromium."""
