#!/usr/bin/env bash
# Runs a command with a fresh local stack around it: a 3-master Redis Cluster
# and the S3/SQS emulator on loopback ports, the environment pointing at them,
# and everything stopped when the command ends (or on Ctrl-C).
#   with-stack.sh NAME REDIS_BASE_PORT EMULATOR_PORT -- COMMAND...
set -euo pipefail
cd "$(dirname "$0")/../.."

name=$1; base=$2; emu_port=$3; shift 3
[ "${1:-}" = "--" ] && shift
run_dir="$PWD/.run/$name"
ports=("$base" "$((base + 1))" "$((base + 2))")

standalone_port=$((base + 10))

# Tests that kill nodes or read from replicas get clusters of their own, with a
# replica per primary (FS_TEST_CLUSTERS=1).
ha_clusters=()
[ "${FS_TEST_CLUSTERS:-0}" = 1 ] && ha_clusters=(ha1 ha2 iso)

cleanup() {
  trap - EXIT INT TERM
  infra/local/redis-cluster.sh stop "$run_dir/redis" || true
  for c in "${ha_clusters[@]}"; do infra/local/redis-cluster.sh stop "$run_dir/$c" || true; done
  redis-cli -p "$standalone_port" shutdown nosave >/dev/null 2>&1 || true
  [ -f "$run_dir/tls/redis.pid" ] && kill "$(cat "$run_dir/tls/redis.pid")" 2>/dev/null || true
  if [ -f "$run_dir/emulator.pid" ]; then kill "$(cat "$run_dir/emulator.pid")" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

infra/local/redis-cluster.sh stop "$run_dir/redis" 2>/dev/null || true
[ -f "$run_dir/emulator.pid" ] && kill "$(cat "$run_dir/emulator.pid")" 2>/dev/null || true
mkdir -p "$run_dir"

# Redis's users: one per role (infra/redis-users.acl, as on AWS), each with a
# fresh password; `default` stays on here for the tests' own inspection.
users_json="$run_dir/redis-users.json"
{
  echo "user default on nopass ~* &* +@all"
  sep=""; printf '{' > "$users_json"
  while read -r user rules; do
    case "$user" in ''|\#*) continue ;; esac
    pw=$(openssl rand -hex 24)
    echo "user $user $rules >$pw"
    role=${user#fs-}
    printf '%s"%s": {"username": "%s", "token": "%s"}' "$sep" "$role" "$user" "$pw" >> "$users_json"
    sep=", "
  done < infra/redis-users.acl
  printf '}\n' >> "$users_json"
} > "$run_dir/users.acl"
chmod 600 "$run_dir/users.acl" "$users_json"
export FS_REDIS_ACLFILE="$run_dir/users.acl" FS_LOCAL_REDIS_USERS_FILE="$users_json"

infra/local/redis-cluster.sh start "$run_dir/redis" 0 "${ports[@]}"
offset=20
for c in "${ha_clusters[@]}"; do
  infra/local/redis-cluster.sh stop "$run_dir/$c" 2>/dev/null || true
  # `iso`: 3 primaries of its own, for tests that measure the whole cluster.
  if [ "$c" = iso ]; then n=3; replicas=0; else n=6; replicas=1; fi
  hp=(); for ((i = 0; i < n; i++)); do hp+=("$((base + offset + i))"); done
  infra/local/redis-cluster.sh start "$run_dir/$c" "$replicas" "${hp[@]}"
  var="FS_TEST_$(echo "$c" | tr a-z A-Z)_REDIS_URL"
  export "$var=redis://127.0.0.1:${hp[0]},redis://127.0.0.1:${hp[1]},redis://127.0.0.1:${hp[2]}"
  offset=$((offset + 10))
done
# A standalone Redis beside the cluster, for the standalone-mode test.
redis-cli -p "$standalone_port" shutdown nosave >/dev/null 2>&1 || true
mkdir -p "$run_dir/standalone"
redis-server --port "$standalone_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$run_dir/standalone" \
  --aclfile "$FS_REDIS_ACLFILE" \
  --hash-max-listpack-value 256 \
  --daemonize yes --logfile "$run_dir/standalone/redis.log"
# Multipart parts from 256 bytes (S3's own minimum is 5 MiB), so tests can
# upload small files the way the aws CLI uploads large ones.
S3_UPLOAD_PART_MIN_SIZE=256 .venv/bin/moto_server -H 127.0.0.1 -p "$emu_port" >"$run_dir/emulator.log" 2>&1 &
echo $! > "$run_dir/emulator.pid"
for i in $(seq 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$emu_port/moto-api/data.json', timeout=1)" 2>/dev/null && break
  [ "$i" = 100 ] && { echo "S3/SQS emulator did not start; see $run_dir/emulator.log" >&2; exit 1; }
  sleep 0.2
done

export FS_REDIS_URL="redis://127.0.0.1:${ports[0]},redis://127.0.0.1:${ports[1]},redis://127.0.0.1:${ports[2]}"
export FS_REDIS_MODE=cluster
export AWS_ENDPOINT_URL="http://127.0.0.1:$emu_port"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# A TLS Redis with AUTH, signed by a throwaway CA (FS_TEST_CLUSTERS=1).
if [ "${FS_TEST_CLUSTERS:-0}" = 1 ]; then
  tls_port=$((base + 15)); tls_dir="$run_dir/tls"; mkdir -p "$tls_dir"
  redis-cli -p "$tls_port" --tls --insecure -a "$(cat "$tls_dir/token" 2>/dev/null)" shutdown nosave >/dev/null 2>&1 || true
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=feature-store test CA" \
    -keyout "$tls_dir/ca.key" -out "$tls_dir/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$tls_dir/redis.key" -out "$tls_dir/redis.csr" >/dev/null 2>&1
  printf "subjectAltName=IP:127.0.0.1,DNS:localhost\n" > "$tls_dir/san.ext"
  openssl x509 -req -in "$tls_dir/redis.csr" -CA "$tls_dir/ca.crt" -CAkey "$tls_dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$tls_dir/san.ext" -out "$tls_dir/redis.crt" >/dev/null 2>&1
  openssl rand -hex 24 > "$tls_dir/token"
  redis-server --port 0 --tls-port "$tls_port" --bind 127.0.0.1 --tls-cert-file "$tls_dir/redis.crt" \
    --tls-key-file "$tls_dir/redis.key" --tls-ca-cert-file "$tls_dir/ca.crt" --tls-auth-clients no \
    --requirepass "$(cat "$tls_dir/token")" --save "" --appendonly no --dir "$tls_dir" \
    --daemonize yes --logfile "$tls_dir/redis.log" --pidfile "$tls_dir/redis.pid"
  export FS_TEST_TLS_REDIS_URL="rediss://127.0.0.1:$tls_port" FS_TEST_TLS_CA_FILE="$tls_dir/ca.crt"
  export FS_TEST_TLS_TOKEN_FILE="$tls_dir/token"
fi
# A key pair for the gateway's `jwt` mode (FS_API_AUTH=jwt): the gateway
# verifies with the public key, `local-stack token` signs with the private one.
jwt_dir="$run_dir/jwt"; mkdir -p "$jwt_dir"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$jwt_dir/private.pem" 2>/dev/null
openssl pkey -in "$jwt_dir/private.pem" -pubout -out "$jwt_dir/public.pem" 2>/dev/null
chmod 600 "$jwt_dir/private.pem"
export FS_JWT_ISSUER="https://feature-store.local" FS_JWT_AUDIENCE="feature-store"
export FS_JWT_PUBLIC_KEY_FILE="$jwt_dir/public.pem" FS_JWT_PRIVATE_KEY_FILE="$jwt_dir/private.pem"
export FS_LOCAL_RUN_DIR="$run_dir"
export FS_TEST_STANDALONE_REDIS_URL="redis://127.0.0.1:$standalone_port"
export FS_BUCKET="feature-store-batches"
# For other shells: `source .run/NAME/env` points fsctl and the aws CLI here.
cat > "$run_dir/env" <<ENV
export FS_REDIS_URL="$FS_REDIS_URL" FS_REDIS_MODE=cluster FS_BUCKET="$FS_BUCKET"
export AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export FS_LOCAL_REDIS_USERS_FILE="$FS_LOCAL_REDIS_USERS_FILE"
export FS_JWT_ISSUER="$FS_JWT_ISSUER" FS_JWT_AUDIENCE="$FS_JWT_AUDIENCE" FS_JWT_PUBLIC_KEY_FILE="$FS_JWT_PUBLIC_KEY_FILE" FS_JWT_PRIVATE_KEY_FILE="$FS_JWT_PRIVATE_KEY_FILE"
ENV
echo "redis cluster on ${ports[*]}, S3/SQS emulator on $emu_port (environment: source .run/$name/env)"
"$@"
