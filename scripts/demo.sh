#!/usr/bin/env bash
# rolegate standalone demo: a "pod" with an unmodified AWS SDK gets AWS credentials
# from rolegate, with no AWS keys of its own and no Kubernetes cluster.
#
#   scripts/demo.sh            (what `make demo` runs)
#
# What it starts, all on 127.0.0.1 and free ports:
#   - moto_server: a local AWS (IAM + STS) emulator, standing in for AWS;
#   - rolegate serve --config examples/standalone: the IdP, the credentials endpoint,
#     and the IAM registration of examples/standalone/20-iamprovider.yaml.
# Everything is stopped on exit; logs and state stay in .demo/.
#
# Environment:
#   ROLEGATE_BIN=path     binary to run (default target/debug/rolegate)
#   DEMO_SKIP_BUILD=1     do not run `cargo build` first
#   ROLEGATE_PEERS=dir    where tests/peers/install.sh keeps its venv (default .peers)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

config=examples/standalone
demo=.demo
venv="${ROLEGATE_PEERS:-$repo/.peers}/venv"
account=123456789012
provider_arn="arn:aws:iam::$account:saml-provider/rolegate-demo"
role_name="demo-s3-reader"
role_arn="arn:aws:iam::$account:role/$role_name"
sa_issuer=https://kubernetes.default.svc.cluster.local

if [ -t 1 ]; then bold=$'\033[1m' green=$'\033[32m' red=$'\033[31m' dim=$'\033[2m' off=$'\033[0m'
else bold='' green='' red='' dim='' off=''; fi
step() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$off"; }
say()  { printf '%s\n' "$*"; }
ok()   { printf '%s✔ %s%s\n' "$green" "$*" "$off"; }
die()  { printf '%s✘ %s%s\n' "$red" "$*" "$off" >&2; exit 1; }
indent() { sed 's/^/    /'; }

pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    printf '\n%sdemo failed (exit %s). Logs: %s/rolegate.log, %s/moto.log%s\n' "$red" "$rc" "$demo" "$demo" "$off" >&2
    if [ -s "$demo/rolegate.log" ]; then
      printf '%slast lines of %s/rolegate.log:%s\n' "$dim" "$demo" "$off" >&2
      tail -n 15 "$demo/rolegate.log" | indent >&2
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until `curl URL` answers with HTTP status $2 (any status when $2 is empty),
# failing early if process $3 is gone.
wait_for() {
  local url=$1 want=$2 pid=$3 what=$4 code
  for _ in $(seq 1 150); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)"
    if [ "$code" != 000 ] && { [ -z "$want" ] || [ "$code" = "$want" ]; }; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "$what exited early"
    sleep 0.2
  done
  die "$what did not become ready at $url (last status $code)"
}

free_port() {
  "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------
step "1. Peers and binary"
tests/peers/install.sh | indent
if [ "${DEMO_SKIP_BUILD:-}" != 1 ]; then
  cargo build --bin rolegate
fi
rolegate="${ROLEGATE_BIN:-target/debug/rolegate}"
[ -x "$rolegate" ] || die "$rolegate is missing; run cargo build --bin rolegate"
aws="$venv/bin/aws"
python="$venv/bin/python"
ok "$("$rolegate" --version), $("$aws" --version 2>&1 | cut -d' ' -f1), moto $("$python" -c 'import moto; print(moto.__version__)')"

rm -rf "$demo"
mkdir -p "$demo/pod"
moto_port="$(free_port)"
rolegate_port="$(free_port)"
while [ "$rolegate_port" = "$moto_port" ]; do rolegate_port="$(free_port)"; done
agent_port="$(free_port)"
while [ "$agent_port" = "$moto_port" ] || [ "$agent_port" = "$rolegate_port" ]; do agent_port="$(free_port)"; done
moto_url="http://127.0.0.1:$moto_port"
rolegate_url="http://127.0.0.1:$rolegate_port"
# Never send the demo's local calls through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# ---------------------------------------------------------------------------------------
step "2. Start a local AWS (moto) and rolegate"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$demo/moto.log" 2>&1 &
moto_pid=$!
pids+=("$moto_pid")
wait_for "$moto_url/moto-api/" "" "$moto_pid" "moto_server"
ok "moto (IAM + STS) on $moto_url"

# The "platform team" side. Dummy keys are all moto needs for the IAM registration calls;
# STS AssumeRoleWithSAML is unsigned, so rolegate needs no AWS credentials to serve.
AWS_ENDPOINT_URL="$moto_url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test NO_COLOR=1 \
  "$rolegate" serve --config "$config" --state-dir "$demo/state" --listen "127.0.0.1:$rolegate_port" \
  --credentials-uri "http://127.0.0.1:$agent_port/v1/credentials" \
  >"$demo/rolegate.log" 2>&1 &
rolegate_pid=$!
pids+=("$rolegate_pid")
wait_for "$rolegate_url/readyz" 200 "$rolegate_pid" "rolegate serve"
ok "rolegate serve --config $config on $rolegate_url (ready)"

# The admin's AWS CLI, talking to moto.
admin_aws() {
  AWS_ENDPOINT_URL="$moto_url" AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null "$aws" "$@"
}

# ---------------------------------------------------------------------------------------
step "3. rolegate registered its IdP in IAM"
say "IdP metadata: $rolegate_url/samlp/metadata/aws"
say "\$ aws iam list-saml-providers"
admin_aws iam list-saml-providers --query 'SAMLProviderList[].[Arn,CreateDate]' --output text | indent
admin_aws iam list-saml-providers --query 'SAMLProviderList[].Arn' --output text | grep -qx "$provider_arn" \
  || die "IAM has no SAML provider $provider_arn"
entity="$(admin_aws iam get-saml-provider --saml-provider-arn "$provider_arn" --query SAMLMetadataDocument --output text \
  | grep -o 'entityID="[^"]*"' || true)"
[ "$entity" = 'entityID="urn:rolegate:aws"' ] || die "registered metadata has $entity, expected entityID=\"urn:rolegate:aws\""
ok "$provider_arn holds rolegate's metadata ($entity)"

# ---------------------------------------------------------------------------------------
step "4. Create the role, trusting that provider"
cat >"$demo/trust-policy.json" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Principal": {"Federated": "$provider_arn"},
    "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession", "sts:SetSourceIdentity"],
    "Condition": {"StringEquals": {
      "SAML:aud": "https://signin.aws.amazon.com/saml",
      "saml:sub": ["system:serviceaccount:demo:app"]
    }}
  }]
}
EOF
indent <"$demo/trust-policy.json"
admin_aws iam create-role --role-name "$role_name" \
  --assume-role-policy-document "file://$demo/trust-policy.json" --query Role.Arn --output text >/dev/null
ok "created $role_arn"

# ---------------------------------------------------------------------------------------
step "5. Mint the pod's service-account token"
say "(signed by the demo issuer key in $config/issuer/, standing in for the cluster's)"
# --out writes it like a projected token file: no trailing newline.
"$rolegate" dev token --key "$config/issuer/sa-signer.key" --issuer "$sa_issuer" \
  --subject system:serviceaccount:demo:app --audience rolegate --pod app-7d4b9c-x2x8q --out "$demo/pod/token"
"$python" - "$demo/pod/token" <<'EOF' | indent
import base64, json, sys
payload = open(sys.argv[1]).read().split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
for k in ("iss", "sub", "aud"):
    print(f"{k}: {claims[k]}")
print(f"pod: {claims.get('kubernetes.io', {}).get('pod', {}).get('name')}")
EOF
ok "$demo/pod/token"

# ---------------------------------------------------------------------------------------
step "5b. The admission webhook and the node agent"
say "In a cluster the API server sends every new pod to POST /admission/pods; here curl does:"
cat >"$demo/pod/review.json" <<EOF
{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
 "request": {"uid": "demo-1", "namespace": "demo", "operation": "CREATE",
             "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app-7d4b9c-x2x8q", "namespace": "demo"},
                        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "python:3.12"}]}}}}
EOF
say "\$ curl -X POST $rolegate_url/admission/pods -d @review.json"
curl -fsS -X POST -H 'Content-Type: application/json' --data @"$demo/pod/review.json" \
  "$rolegate_url/admission/pods" >"$demo/pod/review-answer.json" || die "the webhook did not answer"
"$python" - "$demo/pod/review-answer.json" "http://127.0.0.1:$agent_port/v1/credentials" <<'EOF' | indent || die "the webhook did not inject the agent's URI"
import base64, json, sys
response = json.load(open(sys.argv[1]))["response"]
print("allowed:", response["allowed"])
patch = json.loads(base64.b64decode(response["patch"]))
for op in patch:
    value = op["value"]
    if op["path"].endswith("/env"):
        for var in value:
            print(f'{op["op"]} env {var["name"]}={var["value"]}')
    elif op["path"] == "/spec/volumes":
        token = value[0]["projected"]["sources"][0]["serviceAccountToken"]
        print(f'{op["op"]} volume {value[0]["name"]}: projected token, audience {token["audience"]}, {token["expirationSeconds"]} s')
    else:
        print(op["op"], op["path"])
sys.exit(0 if sys.argv[2] in json.dumps(patch) else 1)
EOF
ok "the webhook injects the two variables and the token volume"

# The node agent: on a node it listens on 169.254.170.23:80 (host network); here on loopback,
# forwarding to rolegate (over TLS with the operator CA in a cluster; plain http here).
NO_COLOR=1 "$rolegate" agent --listen "127.0.0.1:$agent_port" --server "$rolegate_url" >"$demo/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
wait_for "http://127.0.0.1:$agent_port/healthz" 200 "$agent_pid" "rolegate agent"
ok "rolegate agent on http://127.0.0.1:$agent_port, the URI the webhook injected"

# The pod's whole environment, as the rolegate webhook injects it (plus the moto
# endpoint and region). Every other AWS_* setting is removed, and the shared config files
# are hidden, so the credentials can only come from rolegate.
# (AWS_DEFAULT_REGION too: botocore/awscli v1 read only that one.)
as_pod() {
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_SECURITY_TOKEN \
      -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_ROLE_ARN -u AWS_WEB_IDENTITY_TOKEN_FILE \
      -u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI -u AWS_CONTAINER_AUTHORIZATION_TOKEN \
    AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:$agent_port/v1/credentials" \
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$demo/pod/token" \
    AWS_ENDPOINT_URL="$moto_url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    "$@"
}

# ---------------------------------------------------------------------------------------
step "6. The pod: unmodified boto3"
cat >"$demo/pod/whoami.py" <<'EOF'
import boto3

session = boto3.Session()
identity = session.client("sts").get_caller_identity()
print("credentials from:", session.get_credentials().method)
print("arn:", identity["Arn"])
EOF
say "\$ cat $demo/pod/whoami.py"
indent <"$demo/pod/whoami.py"
say "\$ python $demo/pod/whoami.py"
out="$(as_pod "$python" "$demo/pod/whoami.py")" || die "boto3 could not get credentials"
indent <<<"$out"
expected_arn="arn:aws:sts::$account:assumed-role/$role_name/demo.app"
grep -qx "arn: $expected_arn" <<<"$out" || die "boto3 did not print $expected_arn"
grep -qx "credentials from: container-role" <<<"$out" || die "boto3 took its credentials from somewhere else"
ok "boto3 is $expected_arn"

step "7. The pod: AWS CLI"
say "\$ aws sts get-caller-identity"
out="$(as_pod "$aws" sts get-caller-identity --output json)" || die "the AWS CLI could not get credentials"
indent <<<"$out"
grep -q "\"Arn\": \"$expected_arn\"" <<<"$out" || die "the AWS CLI did not print $expected_arn"
ok "the AWS CLI is $expected_arn too"

# ---------------------------------------------------------------------------------------
step "8. Legacy apps: Auth0-style POST /delegation"
say "\$ curl -X POST $rolegate_url/delegation -d grant_type=...jwt-bearer -d id_token=\$TOKEN -d target=aws ..."
code="$(curl -s -o "$demo/delegation.json" -w '%{http_code}' "$rolegate_url/delegation" \
  --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer \
  --data-urlencode "id_token@$demo/pod/token" \
  --data-urlencode target=aws \
  --data-urlencode client_id=rolegate \
  --data-urlencode "role=$role_arn" \
  --data-urlencode "principal=$provider_arn" \
  --data-urlencode api_type=aws)"
"$python" - "$demo/delegation.json" <<'EOF' | indent
import json, sys
body = json.load(open(sys.argv[1]))
creds = body.get("Credentials", {})
for secret in ("SecretAccessKey", "SessionToken"):
    if secret in creds:
        creds[secret] = "<redacted>"
print(json.dumps(body, indent=2, sort_keys=True))
EOF
[ "$code" = 200 ] || die "POST /delegation answered $code"
grep -q "\"Arn\": *\"$expected_arn\"" "$demo/delegation.json" || die "POST /delegation did not return $expected_arn"
say "(Issuer, Subject and NameQualifier are moto's canned values; AWS derives them from the assertion.)"
ok "200, credentials for $expected_arn"

# ---------------------------------------------------------------------------------------
step "9. Refused: a service account no RoleMapping names"
"$rolegate" dev token --key "$config/issuer/sa-signer.key" --issuer "$sa_issuer" \
  --subject system:serviceaccount:demo:intruder --audience rolegate --out "$demo/pod/intruder-token"
say "\$ curl -H \"Authorization: \$(cat intruder-token)\" $rolegate_url/v1/credentials"
code="$(curl -s -o "$demo/refused.json" -w '%{http_code}' -H "Authorization: $(cat "$demo/pod/intruder-token")" \
  "$rolegate_url/v1/credentials")"
printf 'HTTP %s\n' "$code" | indent
"$python" -m json.tool "$demo/refused.json" | indent
[ "$code" = 403 ] || die "expected 403, got $code"
ok "refused with 403: nothing was signed, STS was never called"

# ---------------------------------------------------------------------------------------
step "10. A person: sign in at the login URL and pick up a SAMLResponse"
say "Open $rolegate_url/samlp/aws in a browser and sign in as ada / demo-password"
say "($config/50-people.yaml). Here curl plays the browser:"
jar="$demo/person.cookies"
rm -f "$jar"
say "\$ curl $rolegate_url/samlp/aws   (-> /login/continue -> /login/via/people: the password form)"
curl -s -c "$jar" -b "$jar" -L -o "$demo/person-form.html" "$rolegate_url/samlp/aws"
grep -q 'type="password"' "$demo/person-form.html" || die "the login URL did not lead to the password form"
say "\$ curl -X POST $rolegate_url/login/via/people -d username=ada -d password=...   (-> the auto-posting form)"
code="$(curl -s -c "$jar" -b "$jar" -L -o "$demo/person-post.html" -w '%{http_code}' \
  --data-urlencode username=ada --data-urlencode password=demo-password "$rolegate_url/login/via/people")"
[ "$code" = 200 ] || die "sign-in answered $code"
"$python" - "$demo/person-post.html" "$demo/person-assertion.b64" <<'EOF' | indent
import base64, html, re, sys
page = open(sys.argv[1]).read()
action = re.search(r'<form id="saml" method="post" action="([^"]+)"', page).group(1)
value = html.unescape(re.search(r'name="SAMLResponse" value="([^"]+)"', page).group(1))
open(sys.argv[2], "w").write(value)
xml = base64.b64decode(value).decode()
print("form posts to:", html.unescape(action))
print("NameID:", re.search(r"<saml:NameID[^>]*>([^<]+)<", xml).group(1))
for name, v in re.findall(r'<saml:Attribute Name="([^"]+)"[^>]*><saml:AttributeValue>([^<]+)<', xml):
    print(name.rsplit("/", 1)[-1] + ":", v)
EOF
say "\$ aws sts assume-role-with-saml --saml-assertion file://person-assertion.b64 ...   (what the console does)"
person_arn="$(admin_aws sts assume-role-with-saml --role-arn "$role_arn" --principal-arn "$provider_arn" \
  --saml-assertion "file://$demo/person-assertion.b64" --query AssumedRoleUser.Arn --output text)"
say "    $person_arn"
[ "$person_arn" = "arn:aws:sts::$account:assumed-role/$role_name/ada" ] || die "STS gave $person_arn"
ok "ada signed in with a password and holds $person_arn"

# ---------------------------------------------------------------------------------------
step "Done"
say "The pod never held an AWS key: rolegate verified its service-account token, signed a SAML"
say "assertion and exchanged it with STS AssumeRoleWithSAML (an unsigned call)."
say "Logs: $demo/rolegate.log, $demo/agent.log, $demo/moto.log   Config: $config/"
