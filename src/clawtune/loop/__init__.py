"""The improvement loop: the gateway's log read back as training data, failures collected with corrections, and A/B
tests of a retrained model (always-valid statistics, guardrails, canary ramps, promotion and rollback)."""
