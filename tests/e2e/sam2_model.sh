# Sourced by tests/e2e/*.sh (from the project root): sam2_model DIR SEED exports MODEL, MODEL_CFG and PYTHONPATH for
# the harness's function host on .venv (CPU torch): a random-weight tiny SAM 2.1 checkpoint in DIR (SEED "placed": the
# checkpoint whose masks are blobs at the prompt, testlab/sam2/placed_checkpoint.py; "red": the one whose masks are the
# red pixels, for a tracker that follows a red square), and torchvision's import made
# possible beside the CPU torch (testlab/sam2/torchvision_cpu.py), only for this project's venv.
sam2_model() {
  local dir=$1 seed=$2
  if [[ $seed == placed || $seed == red ]]; then
    local writer=write_placed_checkpoint
    [[ $seed == red ]] && writer=write_following_checkpoint  # masks: the red pixels, on every frame
    .venv/bin/python -c "import sys; sys.path.insert(0, '.'); from testlab.sam2.placed_checkpoint import $writer as w; w(sys.argv[1])" "$dir/sam2_tiny.pt" || return 1
  else
    .venv/bin/python -c "import sys; sys.path.insert(0, '.'); from testlab.sam2.random_checkpoint import write_random_checkpoint as w; w(sys.argv[1], seed=int(sys.argv[2]))" "$dir/sam2_tiny.pt" "$seed" || return 1
  fi
  mkdir -p "$dir/site"
  .venv/bin/python - "$dir/site/sitecustomize.py" "$(pwd)" <<'PY' || return 1
import sys
out, root = sys.argv[1:]
open(out, "w").write(f"import sys\nif sys.prefix == {sys.prefix!r}:\n    sys.path.insert(0, {root!r})\n"
                     f"    sys.path.append({root + '/files/nuclio-runtime'!r})  # sam2_runtime, as the deploy puts it\n"
                     "    from testlab.sam2.torchvision_cpu import allow_import\n    allow_import()\n")
PY
  export MODEL=$dir/sam2_tiny.pt MODEL_CFG=configs/sam2.1/sam2.1_hiera_t.yaml PYTHONPATH=$dir/site
}
