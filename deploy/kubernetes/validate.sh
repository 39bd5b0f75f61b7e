#!/usr/bin/env bash
# Validates the manifests of this directory and the CRDs of crds/ against
# the Kubernetes OpenAPI schemas (strict: unknown fields are errors) with
# kubernetes-validate, for the oldest and newest Kubernetes versions we
# claim. kubernetes-validate checks a CRD's own fields, not the schema it
# defines: `cargo test -p k8s-watch --test crds` checks that each schema is
# structural and that the project's policies (Kafka rules included) pass it. Installs the tool in
# a virtualenv under ${XDG_CACHE_HOME:-~/.cache} when it is missing; exits 0
# with a SKIP message when it cannot be installed (no network, no python).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
versions=(${PORTCULLIS_K8S_VERSIONS:-1.33.0 1.37.0})

tool="$(command -v kubernetes-validate || true)"
if [ -z "$tool" ]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/kubernetes-validate"
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q kubernetes-validate; } >/dev/null 2>&1; then
      echo "SKIP deploy/kubernetes/validate.sh: kubernetes-validate cannot be installed (pip install kubernetes-validate failed)"
      exit 0
    fi
  fi
  tool="$venv/bin/kubernetes-validate"
fi

status=0
for v in "${versions[@]}"; do
  echo "== Kubernetes $v"
  "$tool" --strict -k "$v" "$here"/*.yaml "$here"/crds/*.yaml || status=1
done
if [ "$status" -eq 0 ]; then
  echo "OK deploy/kubernetes manifests and CRDs are valid"
else
  echo "FAIL deploy/kubernetes manifests: see above"
fi
exit "$status"
