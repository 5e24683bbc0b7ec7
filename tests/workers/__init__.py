"""Consumer modules that live outside the `consumers` package, run by tests as subprocesses."""
