"""Tests of the `consumers` command line."""
