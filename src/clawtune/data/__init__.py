"""Training data: export from logs, scrub, split, validate (and, later, augment and balance)."""
