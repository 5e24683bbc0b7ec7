"""Tests of confirmed publishing, against the real broker and nodes of the tests' own."""
