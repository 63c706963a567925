#!/usr/bin/env bash
# Starts or stops a local Redis Cluster of N masters (and optional replicas).
#   redis-cluster.sh start DIR REPLICAS PORT...
#   redis-cluster.sh stop DIR
# With FS_REDIS_ACLFILE set, every node loads its users from that file.
set -euo pipefail

cmd=$1; dir=$2; shift 2

case "$cmd" in
start)
  replicas=$1; shift
  rm -rf "$dir"; mkdir -p "$dir"
  for p in "$@"; do
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --protected-mode no \
      --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" --cluster-node-timeout 2000 \
      --dir "$dir/$p" --save "" --appendonly no --repl-diskless-sync-delay 0 --hash-max-listpack-value 256 \
      ${FS_REDIS_ACLFILE:+--aclfile "$FS_REDIS_ACLFILE"} \
      --daemonize yes --pidfile "$dir/$p/redis.pid" --logfile "$dir/$p/redis.log"
    echo "$p" >> "$dir/ports"
  done
  for p in "$@"; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  nodes=(); for p in "$@"; do nodes+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas "$replicas" --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; exit 1; }
  for p in "$@"; do
    for i in $(seq 200); do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
      [ "$i" = 200 ] && { echo "cluster did not become ready on port $p" >&2; exit 1; }
      sleep 0.1
    done
  done
  # Replicas count only once their link to the primary is up.
  if [ "$replicas" -gt 0 ]; then
    for p in "$@"; do
      for i in $(seq 200); do
        info=$(redis-cli -p "$p" info replication 2>/dev/null)
        echo "$info" | grep -q 'role:master' && break
        echo "$info" | grep -q 'master_link_status:up' && break
        [ "$i" = 200 ] && { echo "replica on port $p did not sync" >&2; exit 1; }
        sleep 0.1
      done
    done
  fi
  ;;
stop)
  [ -f "$dir/ports" ] || exit 0
  while read -r p; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done < "$dir/ports"
  ;;
*) echo "usage: $0 start DIR REPLICAS PORT... | stop DIR" >&2; exit 2 ;;
esac
