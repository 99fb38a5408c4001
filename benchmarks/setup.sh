#!/usr/bin/env bash
# Create benchmarks/.venv (Python 3.11) with torch/torchvision for the comparison benchmarks.
# Idempotent: does nothing when .venv/.installed is newer than requirements.txt.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
REQ=requirements.txt

if [ -f "$VENV/.installed" ] && [ "$VENV/.installed" -nt "$REQ" ]; then
    echo "$VENV is up to date"
    exit 0
fi

# torch 2.14.1 / torchvision 0.29.1 are installed as cp311 wheels: python3.11 on PATH, else pyenv.
py=""
pyenv_root="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
for candidate in python3.11 $(ls -d "$pyenv_root"/versions/3.11.*/bin/python 2>/dev/null); do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
        py="$candidate"; break
    fi
done
if [ -z "$py" ]; then
    echo "error: Python 3.11 not found; install it, e.g. 'pyenv install 3.11'" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $py"
    "$py" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet -r "$REQ"
touch "$VENV/.installed"
versions='import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
echo "$VENV ready: $("$VENV/bin/python" -c "$versions")"
