#!/bin/bash
# Development check (not CI): labforge.tools.cvat_check against CVAT v2.51.0's real server and lambda API, run by the
# workplace's ../shared/cvat-e2e harness (its stand-in Nuclio dashboard serves one function directory).
#   tests/e2e/cvat_check.sh detector IMAGE     tests/e2e/yolo_v3_standin (YOLOv3's id and labels, not a detector):
#                                              login, function list, task + data + request polling, lambda call, labels
#   tests/e2e/cvat_check.sh interactor IMAGE   our real SAM 2 (files/nuclio/sam2) with a random-weight tiny checkpoint:
#                                              the same, then one click through CVAT's lambda API
#   tests/e2e/cvat_check.sh tracker IMAGE      our SAM 2 tracker (files/nuclio/sam2-tracker), same checkpoint: a
#                                              rectangle followed over 3 frames with CVAT's signed states
#   tests/e2e/cvat_check.sh tracker-ui IMAGE   the same tracker in CVAT's web UI (tests/e2e/tracker_ui.js): AI Tools ->
#                                              Trackers, a rectangle drawn around a red square, four frames forward
#                                              while the square moves (IMAGE unused), with the checkpoint whose
#                                              masks are the red pixels
#   tests/e2e/cvat_check.sh interactor-ui IMAGE  our SAM 2 in CVAT's web UI with the placed checkpoint (masks at the
#                                              prompt): where masks land, with a region, a prompt deleted
#                                              (tests/e2e/interactor_ui.js; IMAGE 640x480)
# CVAT_E2E_RELEASE (v2.51.0 by default, or v2.73.0) picks CVAT's release; the interactor gets the answer form labforge
# deploys for it (CVAT_INTERACTOR_ANSWER, labforge.nuclio_functions.interactor_answer).
# Run from the project root after ./install.sh. Last lines: the checker's report.
set -uo pipefail
source "$(dirname "$0")/sam2_model.sh"
mode=${1:-}; image=$(readlink -f "${2:-/nonexistent}")
[[ ($mode == detector || $mode == interactor || $mode == interactor-ui || $mode == tracker || $mode == tracker-ui) && -f $image ]] \
  || { echo "usage: tests/e2e/cvat_check.sh detector|interactor|interactor-ui|tracker|tracker-ui IMAGE"; exit 2; }
release=${CVAT_E2E_RELEASE:-v2.51.0}
harness=${CVAT_E2E:-../shared/cvat-e2e}
cache=${CVAT_E2E_CACHE:-/tmp/cvat-e2e-cache}
work=$(mktemp -d /tmp/cvat-check.XXXXXX)
if [[ $mode == detector ]]; then
  fdir=tests/e2e/yolo_v3_standin
  args=(--expect openvino-omz-public-yolo-v3-tf --detector openvino-omz-public-yolo-v3-tf --expect-label person)
else
  if [[ $mode == interactor || $mode == interactor-ui ]]; then
    fdir=files/nuclio/sam2 seed=29
    [[ $mode == interactor-ui ]] && seed=placed
    args=(--interactor pth-labforge-sam2-cpu)  # function.yaml (CPU); function-gpu.yaml is pth-labforge-sam2
    CVAT_INTERACTOR_ANSWER=$(.venv/bin/python -c "import sys; from labforge.nuclio_functions import interactor_answer as a; print(a(sys.argv[1]))" "$release") || exit 1
    export CVAT_INTERACTOR_ANSWER
  else
    # seed 0: random weights whose tracked mask on the photo stays non-empty (seed 29's is empty from frame 1);
    # tracker-ui: a red square moving over 5 frames, and the checkpoint whose masks are the red pixels
    fdir=files/nuclio/sam2-tracker seed=0
    if [[ $mode == tracker-ui ]]; then
      seed=red
      .venv/bin/python - "$work/frames" <<'PY' || exit 1
import json, os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
os.makedirs(out)
boxes = []
for i in range(5):  # 80 x 60 pixels, 40 right and 20 down per frame
    frame = np.random.default_rng(i).integers(0, 40, (480, 640, 3), dtype=np.uint8)
    x, y = 120 + 40 * i, 140 + 20 * i
    frame[y : y + 60, x : x + 80] = (230, 40, 30)
    Image.fromarray(frame).save(f"{out}/{i}.png")
    boxes.append([x, y, x + 80, y + 60])
json.dump(boxes, open(f"{out}/boxes.json", "w"))
PY
    fi
    args=(--tracker pth-labforge-sam2-tracker-cpu)
  fi
  sam2_model "$work" "$seed" || exit 1
fi
rm -f "$cache/serve.json"
"$harness/run.sh" "$fdir" --mode serve --python .venv --release "$release" > "$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 900); do [[ -s $cache/serve.json ]] && break; kill -0 $serve 2>/dev/null || { tail -5 "$work/serve.log"; exit 1; }; sleep 1; done
read -r api password < <(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["api"], d["password"])' "$cache/serve.json")
if [[ $mode == tracker-ui || $mode == interactor-ui ]]; then
  node_path=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["node_path"])' "$cache/serve.json")
  if [[ $mode == tracker-ui ]]; then
    NODE_PATH=$node_path node tests/e2e/tracker_ui.js "$cache/serve.json" "SAM 2.1 tracker (labforge, CPU, 8 objects at a time)" "$image" "$work/frames"
  else
    NODE_PATH=$node_path node tests/e2e/interactor_ui.js "$cache/serve.json" "Segment Anything 2.1 tiny (labforge, CPU)" "$image"
  fi
else
  LABFORGE_CVAT_ADMIN_PASSWORD=$password .venv/bin/python -m labforge.tools.cvat_check --url "$api" "${args[@]}" --image "$image" --timeout 120
fi
rc=$?
kill -TERM $serve 2>/dev/null; wait $serve 2>/dev/null
[[ $rc == 0 ]] || tail -n 20 "$cache/last-run/function-calls.log" 2>/dev/null
rm -rf "$work"
exit $rc
