"""The durable spool: append-only segments, their format, the drain, and parked records.

`command` is `python -m service parked`, the operators' look at parked records.
"""
