"""python -m labforge.tools.doctor"""

import sys

from labforge.tools.doctor import main

sys.exit(main())
