#!/usr/bin/env bash
# Install the benchmark's load generator (wrk) if it is missing. Needs root (or run it with sudo).
set -euo pipefail
command -v wrk || (apt-get update && apt-get install -y wrk)
