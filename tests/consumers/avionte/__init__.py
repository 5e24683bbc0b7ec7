"""Tests of the Avionté API client, against a server that enforces its documented behaviour."""
