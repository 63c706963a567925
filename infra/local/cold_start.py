"""Cold start of a Lambda bootstrap: process start to its first answer.

Plays the Lambda Runtime API (the `next` / `response` / `error` routes a
custom runtime polls) on a local port, starts the bootstrap with the
environment Lambda gives it plus the caller's (FS_* for the local stack),
hands it one API Gateway event and times how long the answer takes. Runs
several times and prints the median and the fastest.

    python3 infra/local/cold_start.py target/lambda/serve/bootstrap \
        tests/fixtures/apigw-http-v2.json --runs 10
"""
import argparse
import http.server
import json
import os
import statistics
import subprocess
import threading
import time


class Runtime(http.server.ThreadingHTTPServer):
    """One invocation: the event to hand out and, once answered, the answer."""

    def __init__(self, event):
        super().__init__(("127.0.0.1", 0), Handler)
        self.event = event
        self.handed = False
        self.answer = None
        self.done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        if self.server.handed:
            # One invocation per process: later polls wait for the end.
            self.server.done.wait(30)
            try:
                self.send_error(503)
            except OSError:
                pass  # the process was stopped while it waited
            return
        self.server.handed = True
        body = self.server.event
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "cold-start-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:serve")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        ok = self.path.endswith("/response")
        self.server.answer = (time.perf_counter(), ok, body)
        self.server.done.set()


def once(bootstrap, event):
    rt = Runtime(event)
    threading.Thread(target=rt.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{rt.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "serve",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/serve",
        "AWS_LAMBDA_LOG_STREAM_NAME": "cold-start",
        "AWS_REGION": env.get("AWS_REGION", "us-east-1"),
        "FS_LOG_FORMAT": "text",
        "RUST_LOG": "warn",
    })
    started = time.perf_counter()
    proc = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answered = rt.done.wait(30)
    proc.kill()
    _, err = proc.communicate()
    rt.shutdown()
    if not answered or not rt.answer[1]:
        raise SystemExit(f"no answer from {bootstrap}: {rt.answer and rt.answer[2][:300]!r} {err[-500:]!r}")
    at, _, body = rt.answer
    return (at - started) * 1000, json.loads(body)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bootstrap")
    p.add_argument("event")
    p.add_argument("--runs", type=int, default=10)
    a = p.parse_args()
    with open(a.event, "rb") as f:
        event = f.read()
    times = []
    for _ in range(a.runs):
        ms, answer = once(a.bootstrap, event)
        times.append(ms)
    size = os.path.getsize(a.bootstrap)
    print(json.dumps({
        "bootstrap": a.bootstrap,
        "bytes": size,
        "runs": a.runs,
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "status": answer.get("statusCode"),
    }))


if __name__ == "__main__":
    main()
