"""Consumer workers that subscribe to Avionté events on the bus."""
