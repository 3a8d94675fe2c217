import sys

from drift.fleet import main

sys.exit(main())
