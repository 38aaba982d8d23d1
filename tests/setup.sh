#!/usr/bin/env bash
# What the tests need beyond Rust, installed once: iptables, iproute2, curl and setpriv for the
# network-namespace tests, the Prometheus server for the metrics test and Chromium for the
# service-graph page (Debian packages; needs root), and Helm's Go library through the
# helm-python-sdk package in a venv under target/ for the chart tests. Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v iptables >/dev/null || missing+=(iptables)
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v setpriv >/dev/null || missing+=(util-linux)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# tests/tests/prometheus.rs scrapes the proxies with the real Prometheus server.
command -v prometheus >/dev/null || missing+=(prometheus)
# ... and loads `meshctl dashboard` in headless Chromium.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# tests/tests/charts.rs renders the charts with this interpreter (or MESH_HELM_PYTHON).
CHARTS_VENV="$PWD/target/charts-venv"
if ! "$CHARTS_VENV/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
  python3 -m venv "$CHARTS_VENV"
  "$CHARTS_VENV/bin/pip" install --quiet --disable-pip-version-check helm-python-sdk==0.2.2
fi
