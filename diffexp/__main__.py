import sys

from diffexp.cli import main

sys.exit(main())
