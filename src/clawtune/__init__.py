"""clawtune: fine-tune a specialist model on an OpenClaw agent's own logs, prove it is better, and serve it."""

__version__ = "0.1.0"
