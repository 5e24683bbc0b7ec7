"""The HTTP edge: the app and its webhook handler, the server and its listener.

Limits, damping of failed authentication, authentication itself and the delivery's
SERVER span live here too. Nothing else in the receiver uses this package.
"""
