#!/usr/bin/env bash
# Installs everything avpipe needs, once: system tools (ffmpeg/ffprobe, espeak-ng) and the pinned
# Python stack in .venv. Re-running is cheap: it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_system=()
command -v ffmpeg >/dev/null 2>&1 || need_system+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need_system+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need_system+=(espeak-ng)
if [ ${#need_system[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${need_system[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: $pkgs"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages with sudo: $pkgs"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  else
    case " $pkgs " in
      *" ffmpeg "*) echo "setup: ffmpeg/ffprobe not found and apt-get is not usable here." >&2
                    echo "       Install ffmpeg (with ffprobe) or set AVPIPE_FFMPEG / AVPIPE_FFPROBE." >&2
                    exit 1 ;;
      *) echo "setup: espeak-ng not found; the speech test will be skipped." >&2 ;;
    esac
  fi
fi

stamp="$VENV/.avpipe-installed"
want=$(cat requirements.lock requirements-nodeps.txt setup.cfg setup.py | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
# The pinned stack. torch/torchvision are PyPI's builds: CUDA-enabled, and they run on CPU too.
"$VENV/bin/python" -m pip install -q -r requirements.lock
# facenet-pytorch and fer pin ancient torch/numpy/Pillow; they work on the current stack, so they go in
# without their dependency pins (see README, "Why --no-deps").
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
