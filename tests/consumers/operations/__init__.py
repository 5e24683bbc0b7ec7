"""Tests of the operators' commands over the bus."""
