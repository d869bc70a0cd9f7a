#!/usr/bin/env bash
# The baseline of `cargo xtask bench`: the job of `secret-sync run --force` on the bench config,
# done by hand the way people script it today, with curl calls in sequence:
#   1. POST the client credentials to the Entra ID token endpoint,
#   2. write the token to Vault/OpenBao (KV v2),
#   3. write it to AWS Secrets Manager (PutSecretValue, SigV4-signed by curl),
#   4. write it to a local file (temp file + rename).
# Secrets go to curl on stdin or in a config file descriptor, never in its argument list.
# Needs bash and curl >= 7.75 (--aws-sigv4). Every input comes from the environment:
#   ENTRA_TOKEN_URL CLIENT_ID CLIENT_SECRET SCOPE
#   VAULT_ADDR VAULT_TOKEN VAULT_MOUNT VAULT_NAME
#   AWS_ENDPOINT AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SECRET_ID
#   OUT_FILE
set -euo pipefail

# 1. The token. Only a non-empty access_token is written anywhere.
response=$(printf '%s' "$CLIENT_SECRET" | curl -sS --fail-with-body "$ENTRA_TOKEN_URL" \
  --data-urlencode grant_type=client_credentials \
  --data-urlencode "client_id=$CLIENT_ID" \
  --data-urlencode "scope=$SCOPE" \
  --data-urlencode client_secret@-)
token=${response#*\"access_token\":\"}
token=${token%%\"*}
if [[ -z $token || $token == "$response" ]]; then
  echo "curl-sync: no access_token in the token response" >&2
  exit 1
fi
expires_in=${response#*\"expires_in\":}
expires_in=${expires_in%%[,\}]*}
expires_in=${expires_in//\"/}
expires_on=$((EPOCHSECONDS + expires_in))

# 2. Vault / OpenBao, KV v2.
printf '{"data":{"access_token":"%s","expires_on":%d}}' "$token" "$expires_on" |
  curl -sS --fail-with-body -o /dev/null \
    -K <(printf 'header = "X-Vault-Token: %s"\n' "$VAULT_TOKEN") \
    --data-binary @- "$VAULT_ADDR/v1/$VAULT_MOUNT/data/$VAULT_NAME"

# 3. AWS Secrets Manager (the secret exists; PutSecretValue makes a new current version).
printf '{"SecretId":"%s","SecretString":"%s"}' "$AWS_SECRET_ID" "$token" |
  curl -sS --fail-with-body -o /dev/null \
    --aws-sigv4 "aws:amz:$AWS_REGION:secretsmanager" \
    -K <(printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY") \
    -H "X-Amz-Target: secretsmanager.PutSecretValue" \
    -H "Content-Type: application/x-amz-json-1.1" \
    --data-binary @- "$AWS_ENDPOINT/"

# 4. The file: written beside the target, then renamed over it.
umask 077
tmp="$OUT_FILE.tmp.$$"
printf '{"access_token":"%s","expires_on":%d}\n' "$token" "$expires_on" >"$tmp"
mv -f "$tmp" "$OUT_FILE"
