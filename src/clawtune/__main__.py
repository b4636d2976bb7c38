import sys

from clawtune.cli import main

sys.exit(main())
