import sys

from triggers.cli import main

sys.exit(main())
