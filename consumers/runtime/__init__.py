"""The worker: consuming, handling, settling, retry and dead copies, sessions, threads.

Also its spans and metrics. `fate` decides what becomes of each message, for the worker
and for `consumers.testing`. `python -m consumers run` starts `worker.Worker`.
"""
