"""Tests of the consumers, folder for folder as `consumers/`."""
