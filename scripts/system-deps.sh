#!/usr/bin/env bash
# Install the named Debian packages whose commands are missing, through apt.
# Usage: scripts/system-deps.sh redis-server chromium nghttp2-client wrk kubernetes-client python3-venv
set -euo pipefail

command_for() {
  case "$1" in
    nghttp2-client) echo h2load ;;
    kubernetes-client) echo kubectl ;;
    python3-venv) echo "" ;;
    *) echo "$1" ;;
  esac
}

missing=()
for pkg in "$@"; do
  cmd=$(command_for "$pkg")
  if [ -z "$cmd" ]; then
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  elif ! command -v "$cmd" >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "extauthz: missing ${missing[*]}; install them with your system's package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "extauthz: run as root or install sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "extauthz: installing ${missing[*]} with apt-get" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
