"""TEST STAND-IN, role function (Nuclio functions, run by the stand-in nuctl or dashboard): answers POSTs on :8080 with
{"function": <its name>, "received": <bytes>}, plus "points" (the clicks) for an interactor's payload.
"""

from __future__ import annotations

import json
import os

from labforge_standin.common import Quiet


class Function(Quiet):
    def do_POST(self):
        body = self.body()
        name = os.environ.get("LABFORGE_STANDIN_FUNCTION", "")
        answer = {"function": name, "received": len(body)}
        try:
            clicks = json.loads(body or b"{}").get("pos_points")
        except (ValueError, AttributeError):
            clicks = None
        if clicks:  # an interactor's payload (CVAT's LambdaFunction.invoke): the clicks back as a polygon
            answer["points"] = clicks
        self.answer(200, json.dumps(answer).encode())
