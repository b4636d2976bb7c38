"""`python -m clawtune.sample [FOLDER]`: write the sample agent's OpenClaw state folder, FOLDER/openclaw-state."""

import sys
from pathlib import Path

from clawtune.sample import make_state_dir

if __name__ == "__main__":
    state = make_state_dir(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print(f"{state}: agent my-agent's sessions, as OpenClaw stores them (export OPENCLAW_STATE_DIR={state})")
