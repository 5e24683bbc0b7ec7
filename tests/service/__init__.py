"""Tests of the receiver, folder for folder as `service/`."""
