"""Operators' work over the bus, behind the `consumers` commands and the console.

Dead letters and replay, moving messages without handing any back, the registry of
consumers, retiring one, rerouting unrouted events, and the live tail.
"""
