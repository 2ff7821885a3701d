#!/usr/bin/env bash
# Idempotent project setup: system servers used by tests and `make run`, the virtual
# environment with the project and its dev tools, and the model artifacts.
# Fast when already done: each step checks a stamp or what is installed first.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${VENV:-.venv}
EXTRAS=${FACEMASK_EXTRAS:-dev}

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages for the real servers the tests start (redis, mosquitto, prometheus,
#    chromium for the dashboard test, ffmpeg, espeak-ng for the voice prompt clip).
#    Skipped with FACEMASK_SKIP_APT=1 or when not root; the tests skip what is missing.
APT_PACKAGES=(redis-server redis-tools mosquitto prometheus chromium ffmpeg espeak-ng)
#    `scripts/setup.sh --check` only says whether $VENV is installed from the current lock.
if [[ "${FACEMASK_SKIP_APT:-0}" != 1 && "${1:-}" != --check ]] && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || log "apt-get update failed; trying the install anyway"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || log "WARNING: apt-get install failed; tests needing ${missing[*]} will be skipped"
    fi
fi

# 2. Virtual environment, installed from the lock file (scripts/lock.py: every package
#    pinned with its hashes; `make lock` refreshes it): requirements/$EXTRAS.txt, then the
#    project itself, editable, without dependencies and with the locked setuptools.
#    Reinstalled only when the lock, pyproject.toml or this script changed (the stamp).
lock="requirements/$EXTRAS.txt"
if [[ ! -f "$lock" ]]; then
    log "no lock file $lock for FACEMASK_EXTRAS=$EXTRAS (make lock writes: $(cd requirements && ls -- *.txt | sed 's/\.txt$//' | xargs))"
    exit 1
fi
"$PYTHON" scripts/lock.py --check "$EXTRAS" || exit 1
stamp="$VENV/.facemask-setup"
want=$(cat "$lock" pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)-$EXTRAS
if [[ "${1:-}" == --check ]]; then
    # Is $VENV installed from the current lock? (exit 0: yes; nothing is installed)
    [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]
    exit
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing $lock and facemask (editable) into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
    # (setuptools' notes about editable installs are shown only when the install fails)
    if ! out=$("$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>&1); then
        printf '%s\n' "$out" >&2
        exit 1
    fi
    "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
    echo "$want" >"$stamp"
fi

# 3. Model artifacts and sample images (mirror first when FACEMASK_MODEL_MIRROR is set).
"$VENV/bin/facemask" models fetch
# 4. Derived TFLite models (float32, int8 calibrated on the dev set or the samples), built
#    from the fetched frozen graph into the git-ignored cache; skipped when up to date.
"$VENV/bin/facemask" models build
log "ready"
