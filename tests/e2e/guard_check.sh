#!/bin/bash
# Development check (not CI): labforge's Nuclio guard (labforge/nuclio_guard.py) between CVAT's real server and UI and
# the workplace's cvat-e2e harness's stand-in dashboard. A copy of the harness is patched so that CVAT's NUCLIO port is
# the guard's, which forwards to the harness's dashboard. Then, on the release given:
#   1. the harness's UI interactor cases with CVAT_NUCLIO_INVOKE_METHOD=dashboard (listing and invoking go through
#      the guard; its last line is the verdict);
#   2. in serve mode, as CVAT's admin: the lambda list, one function, and POST /api/lambda/requests with crafted
#      `function` values on a task with data (v2.73.0 asks for data first): CVAT must answer 4xx, the guard's log
#      name each refusal, and the dashboard see only GET /api/functions and GET /api/functions/<real id>.
# Usage, from the project root after ./install.sh:  tests/e2e/guard_check.sh v2.51.0|v2.73.0
set -uo pipefail
source "$(dirname "$0")/sam2_model.sh"
release=${1:-v2.51.0}
harness=${CVAT_E2E:-../shared/cvat-e2e}
cache=${CVAT_E2E_CACHE:-/tmp/cvat-e2e-cache}
export CVAT_E2E_MIRRORS=${CVAT_E2E_MIRRORS:-$(cd "$harness/../.." && pwd)/.mirror} LABFORGE_GUARD=$PWD/labforge/nuclio_guard.py
work=$(mktemp -d /tmp/guard-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$harness" "$work/harness" && chmod -R u+w "$work/harness"
python3 - "$work/harness/run.sh" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
steps = [('UI=$(freeport)', 'UI=$(freeport) GUARD=$(freeport)'),
         ('NUCLIO["PORT"] = $DASH', 'NUCLIO["PORT"] = $GUARD'),
         ('wait_for 20 "${PIDS[-1]}" stubs "OPA/dashboard stand-ins" port_open "$DASH"',
          'wait_for 20 "${PIDS[-1]}" stubs "OPA/dashboard stand-ins" port_open "$DASH"\n'
          'start guard env LABFORGE_NUCLIO_UPSTREAM=127.0.0.1:$DASH LABFORGE_NUCLIO_GUARD_PORT=$GUARD python3 "$LABFORGE_GUARD"\n'
          'wait_for 20 "${PIDS[-1]}" guard "the Nuclio guard" port_open "$GUARD"')]
for old, new in steps:
    if old not in text:
        sys.exit(f"guard_check: the harness's run.sh changed: cannot find {old!r}")
    text = text.replace(old, new, 1)
open(path, "w").write(text)
PY
[[ $? == 0 ]] || exit 2
sam2_model "$work" 29 || exit 1

CVAT_E2E_INVOKE=dashboard "$work/harness/run.sh" files/nuclio/sam2 --python .venv --release "$release" | tail -n 1
ui=${PIPESTATUS[0]}
echo "invocations through the guard: $(grep -c function_invocations "$cache/last-run/dashboard-calls.log")"

rm -f "$cache/serve.json"
"$work/harness/run.sh" files/nuclio/sam2 --mode serve --python .venv --release "$release" > "$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 900); do [[ -s $cache/serve.json ]] && break; kill -0 $serve 2>/dev/null || { tail -5 "$work/serve.log"; exit 1; }; sleep 1; done
read -r api password logs < <(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["api"], d["password"], d["logs"])' "$cache/serve.json")
auth="admin:$password" bad=0
curl -s -u "$auth" -o /dev/null -w "GET /api/lambda/functions: %{http_code}\n" "$api/api/lambda/functions"
task=$(curl -s -u "$auth" -H 'Content-Type: application/json' -d '{"name": "guard-check", "labels": [{"name": "object"}]}' \
  "$api/api/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
python3 -c 'import sys, struct, zlib
w, h = 64, 48
raw = b"".join(b"\x00" + bytes([128, 64, 32]) * w for _ in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))' "$work/frame.png"
curl -s -u "$auth" -F "client_files[0]=@$work/frame.png" -F image_quality=70 -o /dev/null "$api/api/tasks/$task/data"
for _ in $(seq 60); do
  [[ $(curl -s -u "$auth" "$api/api/tasks/$task" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("size") or 0)') -gt 0 ]] && break
  sleep 2
done
for fn in 'x;touch /tmp/guard-check-pwned;' 'x$(touch /tmp/guard-check-pwned)' '../../etc/passwd'; do
  body=$(python3 -c 'import json,sys; print(json.dumps({"function": sys.argv[1], "task": int(sys.argv[2])}))' "$fn" "$task")
  code=$(curl -s -u "$auth" -H 'Content-Type: application/json' -d "$body" -o /dev/null -w '%{http_code}' "$api/api/lambda/requests")
  echo "POST /api/lambda/requests function=$fn -> HTTP $code"
  [[ $code == 4* ]] || bad=1
done
echo "the guard refused:"; sed 's/^/  /' "$logs/guard.log"
echo "the dashboard was asked:"; grep -o 'GET [^ "]*\|POST [^ "]*' "$logs/dashboard-calls.log" | sort | uniq -c
grep -q 'x;touch\|x\$(touch\|etc/passwd' "$logs/dashboard-calls.log" && bad=1
[[ -e /tmp/guard-check-pwned ]] && { echo "PWNED"; bad=1; }
kill -TERM $serve 2>/dev/null; wait $serve 2>/dev/null
echo "guard check on real CVAT $release: $([[ $ui == 0 && $bad == 0 ]] && echo passed || echo FAILED)"
[[ $ui == 0 && $bad == 0 ]]
