"""The bundled sample agent: a deterministic OpenClaw state folder the demo and the tests export."""

from clawtune.sample.agent import make_state_dir

__all__ = ["make_state_dir"]
