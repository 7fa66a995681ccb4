"""Small shared helpers: atomic file IO, safe checkpoints, user-facing errors, devices."""
