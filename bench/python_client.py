"""The Python client against redis-py on the same Redis, one caller.

argv: redis URL, users in the live `bench` dataset, reference buckets
(`ref:%012d`, each with a real record under field `u`), reads per measure.
Prints one JSON object of figures (seconds and users per second).

- Single user: featurestore's get (pointer from its cache, HGET, decode,
  freshness, a dict back) against redis-py's HGET of one real record.
- 100 users: featurestore's batch_get (one HMGET per bucket, pipelined)
  against redis-py pipelining 100 HMGETs of real buckets.
"""

import json
import random
import sys
import time

import featurestore
import redis

url, users, buckets, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fs = featurestore.Client(url, cluster=False)
r = redis.Redis.from_url(url)
rng = random.Random(7)


def timed(call, rounds):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    out.sort()
    return out


def pct(lat, p):
    return lat[min(int(len(lat) * p), len(lat) - 1)]


def ref_key():
    return "ref:%012d" % rng.randrange(buckets)


# Warm both: connections, the pointer cache, the module's lookups.
for _ in range(2000):
    fs.get("bench", rng.randint(1, users), rank=1)
    r.hget(ref_key(), "u")

# Alternate short turns, so both see the same machine.
ours, theirs = [], []
for _ in range(10):
    ours += timed(lambda: fs.get("bench", rng.randint(1, users), rank=1), n // 10)
    theirs += timed(lambda: r.hget(ref_key(), "u"), n // 10)
ours.sort()
theirs.sort()
assert fs.get("bench", 1, rank=1)["rank"] == 1

batches = max(n // 50, 200)


def batch_get():
    a = fs.batch_get("bench", [rng.randint(1, users) for _ in range(100)], rank=1)
    assert a["count"] > 0


def pipelined():
    p = r.pipeline(transaction=False)
    for _ in range(100):
        p.hmget(ref_key(), "u")
    assert len(p.execute()) == 100


b_ours, b_theirs = [], []
for _ in range(10):
    b_ours += timed(batch_get, batches // 10)
    b_theirs += timed(pipelined, batches // 10)

print(json.dumps({
    "get_p50": pct(ours, 0.5), "get_p99": pct(ours, 0.99),
    "hget_p50": pct(theirs, 0.5), "hget_p99": pct(theirs, 0.99),
    "batch_users_per_s": 100 * len(b_ours) / sum(b_ours),
    "pipeline_users_per_s": 100 * len(b_theirs) / sum(b_theirs),
    "batch_p99": pct(sorted(b_ours), 0.99), "pipeline_p99": pct(sorted(b_theirs), 0.99),
}))
