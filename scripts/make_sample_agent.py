"""Write the sample agent's OpenClaw state folder: `python scripts/make_sample_agent.py OUT_DIR`."""

import sys
from pathlib import Path

from clawtune.sample import make_state_dir

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
    print(make_state_dir(out))
