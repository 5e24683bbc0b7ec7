"""The worker: consuming, handling, settling, retry and dead copies, sessions, threads.

Also its spans and metrics. `python -m consumers run` starts `worker.Worker`.
"""
