#!/usr/bin/env bash
# The IAM role the example workload assumes, with the AWS CLI (no Terraform): a trust policy that
# trusts the IAMProvider's SAML provider for exactly one audience and one service account, and a
# read-only S3 policy. Run it with credentials for account 111122223333 after the IAMProvider
# is Ready (so the provider exists); `kubectl -n payments get rolemapping api-s3-reader
# -o jsonpath='{.status.trustPolicy}'` prints the same trust policy for your names.
set -euo pipefail
account="${ACCOUNT:-111122223333}"
provider="${PROVIDER:-rolegate-prod-eu1}"   # IAMProvider spec.providerName
role="${ROLE:-payments-s3-reader}"          # matches the IAMProvider's allowedRoles
subject="${SUBJECT:-system:serviceaccount:payments:api}"

trust="$(mktemp)"
trap 'rm -f "$trust"' EXIT
cat >"$trust" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Principal": {"Federated": "arn:aws:iam::${account}:saml-provider/${provider}"},
    "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession", "sts:SetSourceIdentity"],
    "Condition": {"StringEquals": {
      "SAML:aud": "https://signin.aws.amazon.com/saml",
      "saml:sub": ["${subject}"]
    }}
  }]
}
JSON

aws iam create-role --role-name "$role" --assume-role-policy-document "file://$trust" \
  --max-session-duration 3600 --description "rolegate: ${subject}"
aws iam attach-role-policy --role-name "$role" \
  --policy-arn arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess
# Later changes to who may assume it:
#   aws iam update-assume-role-policy --role-name "$role" --policy-document "file://$trust"
