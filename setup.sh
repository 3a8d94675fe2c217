#!/usr/bin/env bash
# Installs what the program, its tests and the lab need on Debian 12 (as root): Debian packages
# from .ci/apt-packages.txt, a Python virtualenv in .venv with exactly requirements.txt (the
# program's runtime) and requirements-dev.txt (test, lint and lab tooling), the Pulumi toolchain
# (CLI, language host, providers) built from Go modules into /var/cache/clawhosters-toolchain
# (CLAW_TOOLCHAIN_CACHE), linked as .toolchain/, and its providers installed into the CLI's plugin
# cache ($PULUMI_HOME/plugins, by default ~/.pulumi/plugins) as `pulumi plugin install` does.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
grep -v '^\s*#' .ci/apt-packages.txt | xargs apt-get install -y -qq --no-install-recommends >/dev/null

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q --no-deps -r requirements.txt -r requirements-dev.txt
.venv/bin/pip check

.venv/bin/python -m toolchain build
.venv/bin/python -m toolchain install
.toolchain/bin/pulumi version
