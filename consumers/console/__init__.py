"""The operator console: dead letters, unrouted and quarantined events, and replay, in a browser.

`python -m consumers console` serves it (`consumers.cli.console`). Pages are rendered
on the server (`pages`, and `history` for the event history, with what every page
takes in `context`; templates in `templates/`); queues are listed through
RabbitMQ's management API (`management`) and read without losing or reordering what
they hold (`letters`). Every page needs HTTP Basic authentication, and every change a
POST with a CSRF token (`security`).
"""
