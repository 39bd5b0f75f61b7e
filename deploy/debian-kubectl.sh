#!/usr/bin/env bash
# Debian's own kubectl (package kubernetes-client, 1.20 on bookworm), the
# one the project is asked to work with, unpacked beside the machine's
# kubectl without installing it (installing would replace /usr/bin/kubectl).
# Prints the binary's path; exits non-zero (and prints nothing) when the
# package cannot be fetched, and the tests then SKIP that kubectl.
set -euo pipefail
dir=${PORTCULLIS_CACHE:-/var/cache/portcullis}/kubernetes-client
bin=$dir/usr/bin/kubectl
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download kubernetes-client >/dev/null 2>&1) || exit 1
  dpkg -x "$tmp"/kubernetes-client_*.deb "$dir"
fi
"$bin" version --client >/dev/null 2>&1 || exit 1
echo "$bin"
