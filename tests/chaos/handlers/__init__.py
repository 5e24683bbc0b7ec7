"""The chaos run's consumers: each records what it handled, for the ledger to reconcile."""
