"""`make chaos`: the whole system under seeded random faults, and a ledger of every delivery."""
