"""One-hop reads from the feature store's Redis.

    import featurestore
    fs = featurestore.Client("redis://node-1:6379", username="fs-serve", password=token)
    answer = fs.batch_get("recs", [1, 2, 3], limit=10)
    answer["version"]            # every result below comes from this one version
    [r["items"] for r in answer["results"] if r["status"] == "found"]

Answers are plain dicts shaped like the HTTP API's; failures raise
``featurestore.Error`` (``NotFound``, ``InvalidRequest``, ``Unavailable``)
with the API's ``code`` and ``status``.
"""

from ._native import Client, Error, InvalidRequest, NotFound, Unavailable

__all__ = ["Client", "Error", "InvalidRequest", "NotFound", "Unavailable"]
