"""Training: the state and its jitted step, the loop, and the periodic actions around it."""
