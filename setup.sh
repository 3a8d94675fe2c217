#!/usr/bin/env bash
# Installs what the program, its tests and the lab need on Debian 12 (as root): Debian packages
# from .ci/apt-packages.txt and a Python virtualenv in .venv with requirements.txt.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
grep -v '^\s*#' .ci/apt-packages.txt | xargs apt-get install -y -qq --no-install-recommends >/dev/null

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt
