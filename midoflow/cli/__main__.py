import sys

from midoflow.cli.main import main

sys.exit(main())
