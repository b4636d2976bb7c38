"""Training: the typed `ft-config.yaml` and `ft init`, the dry-run estimate, chat-template checks, tokenizing and
packing, replay, the trainer, and `ft train` itself (`run`)."""
