"""Training: the typed `ft-config.yaml` and `ft init`, the plan and the dry-run estimate, chat-template checks,
tokenizing and packing, replay, the trainer, preference training (`dpo`), and `ft train` itself (`run`)."""
