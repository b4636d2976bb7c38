"""Training: the typed `ft-config.yaml` and `ft init` (the trainer itself lands in a later increment)."""
