"""The Python package against the local Redis Cluster, as serve's read-only
Redis user, on a dataset the test harness loaded (tests/tests/client.rs runs
this file): answers shaped like the HTTP API's, errors with its codes, a
pinned version, and batch reads across flips all old or all new."""

import os
import pathlib
import threading
import time

import pytest

import featurestore

DATASET = os.environ["FS_TEST_DATASET"]
# The harness loaded two batches: FIRST (generation 1, now the backup),
# then LIVE (generation 2).
FIRST = os.environ["FS_TEST_FIRST_VERSION"]
LIVE = os.environ["FS_TEST_LIVE_VERSION"]
SIGNALS = pathlib.Path(os.environ["FS_TEST_SIGNAL_DIR"])


def generation_of(result):
    """The batch a result came from, as its items and its model field say."""
    items = result["items"] if "items" in result else [result["item"]]
    generations = {i // 100_000 for i in items}
    assert generations == {int(result["fields"]["model"][1:])}, result
    return generations.pop()


@pytest.fixture(scope="module")
def client():
    return featurestore.Client(
        os.environ["FS_TEST_REDIS_URL"],
        cluster=True,
        username=os.environ["FS_TEST_REDIS_USER"],
        password=os.environ["FS_TEST_REDIS_PASSWORD"],
        pointer_ttl_ms=20,
    )


def test_get_answers_one_user_shaped_like_the_http_api(client):
    a = client.get(DATASET, 3, limit=2, fields=["items", "model"])
    assert a["dataset"] == DATASET
    assert a["userId"] == 3
    assert a["version"] == LIVE
    assert a["items"] == [200_030, 200_031]
    assert a["count"] == 2
    assert a["fields"] == {"model": "g2"}
    assert set(a["freshness"]) == {"producedAt", "liveSince", "ageSeconds", "maxAgeSeconds", "stale"}
    assert a["freshness"]["stale"] is False
    one = client.get(DATASET, "3", rank=2)
    assert (one["rank"], one["item"], one["fields"]["scores"]) == (2, 200_031, 0.9)


def test_batch_get_answers_every_id_in_order_with_its_status(client):
    a = client.batch_get(DATASET, [3, "7", 999_999, 3, "u-404"], rank=1)
    assert (a["version"], a["count"], a["found"]) == (LIVE, 4, 2)
    assert [r["userId"] for r in a["results"]] == [3, 7, 999_999, "u-404"]
    assert [r["status"] for r in a["results"]] == ["found", "found", "unknown_user", "unknown_user"]
    assert [r.get("item") for r in a["results"]] == [200_030, 200_070, None, None]
    past = client.batch_get(DATASET, [1], rank=9)
    assert past["results"][0]["status"] == "rank_out_of_range"


@pytest.mark.parametrize(
    "call, exception, status, code",
    [
        (lambda c: c.get("no-such-dataset-anywhere", 1), featurestore.NotFound, 404, "unknown_dataset"),
        (lambda c: c.get(DATASET, 404_404), featurestore.NotFound, 404, "unknown_user"),
        (lambda c: c.get(DATASET, 1, rank=9), featurestore.NotFound, 404, "rank_out_of_range"),
        (lambda c: c.get(DATASET, 1, version=FIRST[:-1] + ("y" if FIRST[-1] != "y" else "z")), featurestore.NotFound, 404, "unknown_version"),
        (lambda c: c.get(DATASET, 1, rank=1, limit=2), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.get(DATASET, 1, limit=-3), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.get(DATASET, 1, fields=[""]), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.get(DATASET, 1, version="not-a-version"), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.get(DATASET, 1.5), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.get("bad/name", 1), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.batch_get(DATASET, "123"), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.batch_get(DATASET, [1, None]), featurestore.InvalidRequest, 400, "invalid_request"),
        (lambda c: c.batch_get(DATASET, []), featurestore.InvalidRequest, 400, "invalid_request"),
    ],
)
def test_every_refusal_is_an_exception_with_the_http_apis_code(client, call, exception, status, code):
    with pytest.raises(exception) as caught:
        call(client)
    assert isinstance(caught.value, featurestore.Error)
    assert (caught.value.status, caught.value.code) == (status, code), caught.value.message


def test_a_pinned_version_is_read_whatever_is_live(client):
    a = client.batch_get(DATASET, [3, 4], version=FIRST, limit=1)
    assert a["version"] == FIRST
    assert [r["items"] for r in a["results"]] == [[100_030], [100_040]]
    assert client.get(DATASET, 3, version=FIRST)["fields"]["model"] == "g1"


def test_a_wrong_password_or_no_redis_is_unavailable():
    with pytest.raises(featurestore.Unavailable) as caught:
        featurestore.Client(
            os.environ["FS_TEST_REDIS_URL"],
            username=os.environ["FS_TEST_REDIS_USER"],
            password="wrong",
        )
    assert caught.value.code == "unavailable"
    with pytest.raises(featurestore.Unavailable):
        featurestore.Client("redis://127.0.0.1:1", cluster=False, timeout_ms=200)


def test_batch_reads_across_flips_are_all_old_or_all_new(client):
    """Four threads share the client (each call releases the GIL) while the
    harness flips the dataset to new generations."""
    (SIGNALS / "start-flips").touch()
    seen, errors, reads = set(), [], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def reader(r):
        n = 0
        while time.monotonic() < deadline:
            with lock:
                if len(seen) >= 4:
                    return
            ids = [1 + (i * 7 + r * 13 + n) % 400 for i in range(100)]
            try:
                a = client.batch_get(DATASET, ids, rank=1)
                generations = {generation_of(x) for x in a["results"]}
                assert len(generations) == 1, f"one answer mixes batches {generations}"
            except Exception as e:  # reported by the main thread
                errors.append(e)
                return
            with lock:
                seen.add((a["version"], generations.pop()))
                reads[0] += 1
            n += 1

    threads = [threading.Thread(target=reader, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(seen) >= 4, f"{reads[0]} reads met {sorted(seen)}"
    # Each version is one generation.
    assert len({v for v, _ in seen}) == len(seen)
