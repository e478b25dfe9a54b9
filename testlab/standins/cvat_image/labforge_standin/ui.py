"""TEST STAND-IN, role ui (cvat/ui): a page on :8000.
"""

from __future__ import annotations

from labforge_standin import MARK
from labforge_standin.common import Quiet


class Ui(Quiet):
    def do_GET(self):
        self.answer(200, f"<html><body>CVAT UI ({MARK})</body></html>".encode(), "text/html")
