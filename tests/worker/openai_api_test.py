#!/usr/bin/env python3
"""Acceptance test of foresight-worker's OpenAI-compatible HTTP API (issue 19), driven by a client
no one here wrote: PyPI's `openai` (pinned in tests/requirements.txt), and raw HTTP (http.client)
for the inputs that client would never send.

It starts a real foresight-cached and a real foresight-worker (the default model, SmolLM2-135M-
Instruct; deploy/fetch-model.sh) on loopback with free ports and a token, then checks:
  chat and completions (greedy: the same request gives the same text), streams with
  include_usage in OpenAI's order, a shared prefix reported as cached_tokens, 8 concurrent
  streams (each gives the text it gives alone), a stream cancelled midway and one cancelled
  during its prefill (their sequences are freed and the worker still serves), the bad inputs
  (malformed JSON, a bad field, no or a wrong token, an unknown model or path, a prompt beyond
  the context, n=2) with their statuses and OpenAI error objects, /health, /v1/models and
  /metrics, 429 from a second worker whose queue is full, and that SIGTERM stops it cleanly.

  openai_api_test.py --bin-dir build/bin [--model GGUF]

CTest runs it with the virtual environment's Python (tools/python-env.sh) and skips it (77) only
when that environment is missing; CI makes it (deploy/test.sh) and requires this test to pass.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import openai

TOKEN = "openai-api-test-token"


class Daemon:
    """A child process whose stdout is read until its READY line; stderr goes to a log file."""

    def __init__(self, argv, log_path, timeout_s):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log)
        self.ready = self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        buffer = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[0]} exited ({self.proc.returncode}) before READY:\n{self.tail()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                buffer += chunk
                for line in buffer.decode(errors="replace").splitlines():
                    if line.startswith("READY "):
                        return dict(kv.split("=", 1) for kv in line.split()[1:])
        raise RuntimeError(f"{self.proc.args[0]} not READY within {timeout_s} s:\n{self.tail()}")

    def tail(self, lines=40):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")

    def stop(self, timeout_s=20):
        """SIGTERM, then SIGKILL; returns the exit status (None when it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


class Http:
    """Raw HTTP to the worker, for what the openai client would never send."""

    def __init__(self, host, port):
        self.host, self.port = host, port

    def request(self, method, path, body=None, token=TOKEN, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        h = {"Content-Type": "application/json"}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheader("Content-Type"), data


class Checks:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def run(self, name, fn, *args):
        t0 = time.monotonic()
        try:
            fn(*args)
            self.passed += 1
            print(f"[ PASS ] {name} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception as e:  # report every check, then fail
            self.failures.append(name)
            print(f"[ FAIL ] {name}: {e}", flush=True)
            traceback.print_exc()


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_error(status, content_type, data, want_status, words, param=None):
    """The documented status and an OpenAI error object whose message holds `words`."""
    expect(status == want_status, f"status {status}, expected {want_status}: {data[:300]!r}")
    expect(content_type == "application/json", f"Content-Type {content_type}")
    body = json.loads(data)
    error = body.get("error")
    expect(isinstance(error, dict), f"no error object: {body}")
    for key in ("message", "type", "code", "param"):
        expect(key in error, f"error object without {key}: {error}")
    expect(words in error["message"], f"message {error['message']!r} does not say {words!r}")
    if param is not None:
        expect(error["param"] == param, f"param {error['param']!r}, expected {param!r}")
    return error


def metric(text, name):
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    expect(m is not None, f"metric {name} missing")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--model", default="", help="GGUF (default: the worker's default model)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="foresight-openai-test-")
    token_file = os.path.join(tmp, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token_file, 0o600)

    node = worker = None
    extra_workers = []
    checks = Checks()

    def start_worker(name, *flags):
        argv = [os.path.join(args.bin_dir, "foresight-worker"), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                "--cache", node.ready["grpc"], "--token-file", token_file, "--threads", "2", *flags]
        if args.model:
            argv += ["--model", args.model]
        w = Daemon(argv, os.path.join(tmp, name + ".log"), 120)
        expect("http" in w.ready, f"the READY line names no http address: {w.ready}")
        return w

    def connect(w):
        host, port = w.ready["http"].rsplit(":", 1)
        return (openai.OpenAI(base_url=f"http://{w.ready['http']}/v1", api_key=TOKEN, max_retries=0, timeout=300),
                Http(host, int(port)))

    try:
        node = Daemon([os.path.join(args.bin_dir, "foresight-cached"), "--listen", "127.0.0.1:0", "--ram-bytes",
                       "512MiB", "--token-file", token_file], os.path.join(tmp, "node.log"), 30)
        worker = start_worker("worker", "--max-seqs", "8")
        client, raw = connect(worker)
        # The model is named after its file, as llama.cpp's server names it.
        expected_model = os.path.splitext(os.path.basename(args.model.rstrip("/")))[0] if args.model else \
            "SmolLM2-135M-Instruct.Q4_1"
        run_checks(checks, client, raw, worker, expected_model)

        def overload_is_429():
            # One sequence runs and one may wait: a third request while two streams are open is refused.
            small = start_worker("small-worker", "--max-seqs", "1", "--max-waiting", "1")
            extra_workers.append(small)
            small_client, small_raw = connect(small)
            streams = []
            for _ in range(2):  # the first runs, the second waits (a stream's headers come at once)
                streams.append(small_client.completions.create(model=expected_model, prompt="Count to a thousand:",
                                                               max_tokens=400, temperature=0, stream=True,
                                                               extra_body={"ignore_eos": True}))
            expect_error(*small_raw.request("POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 2}), 429,
                         "busy")
            try:
                small_client.completions.create(model=expected_model, prompt="Hello", max_tokens=2)
                raise AssertionError("a request beyond the queue was accepted")
            except openai.RateLimitError:
                pass
            for stream in streams:
                stream.close()

        checks.run("overload: 429 when the queue is full", overload_is_429)
    except Exception as e:
        checks.failures.append("setup")
        print(f"[ FAIL ] setup: {e}", flush=True)
        traceback.print_exc()
    finally:
        for w in extra_workers:
            w.stop()
        if worker is not None:
            status = worker.stop()
            if not checks.failures:
                checks.run("SIGTERM stops the worker cleanly", lambda: expect(status == 0, f"exit status {status}"))
            if checks.failures:
                print("--- worker log (tail) ---\n" + worker.tail(), flush=True)
        if node is not None:
            node.stop()
    print(f"{checks.passed} checks passed, {len(checks.failures)} failed: {checks.failures}", flush=True)
    return 1 if checks.failures else 0


def run_checks(checks, client, raw, worker, expected_model):
    state = {"expected_model": expected_model}

    def aborted(metrics_text):
        m = re.search(r'^foresight_worker_request_errors_total\{code="ABORTED"\} ([0-9.e+]+)$', metrics_text, re.M)
        return float(m.group(1)) if m else 0

    def wait_until_idle(timeout_s, what):
        """Waits until no sequence runs or waits (the scheduler's counts); returns /metrics."""
        deadline = time.monotonic() + timeout_s
        while True:
            _, _, data = raw.request("GET", "/metrics")
            text = data.decode()
            busy = metric(text, "foresight_worker_running_sequences") + metric(text, "foresight_worker_waiting_requests")
            if busy == 0:
                return text
            expect(time.monotonic() < deadline, f"{what}: still running {timeout_s} s after its client went away")
            time.sleep(0.2)

    def health_and_models():
        status, ctype, data = raw.request("GET", "/health", token=None)  # /health needs no token
        expect(status == 200 and json.loads(data) == {"status": "ok"}, f"/health: {status} {data!r}")
        models = client.models.list().data
        expect(len(models) == 1, f"models: {models}")
        expect(models[0].owned_by == "foresight", f"owned_by {models[0].owned_by}")
        expect(models[0].id == state["expected_model"], f"model id {models[0].id!r}, expected {state['expected_model']!r}")
        state["model"] = models[0].id

    def chat():
        r = client.chat.completions.create(model=state["model"], temperature=0, max_tokens=24,
                                           messages=[{"role": "system", "content": "You answer briefly."},
                                                     {"role": "user", "content": "What is the capital of France?"}])
        choice = r.choices[0]
        expect(r.object == "chat.completion" and r.id.startswith("chatcmpl-"), f"{r.object} {r.id}")
        expect(choice.message.role == "assistant", f"role {choice.message.role}")
        expect(isinstance(choice.message.content, str) and choice.message.content, "empty content")
        expect(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason}")
        u = r.usage
        expect(u.prompt_tokens > 10 and 0 < u.completion_tokens <= 24, f"usage {u}")
        expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage {u}")
        expect(u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens >= 0, f"usage {u}")
        print(f"    chat: {choice.message.content!r} ({choice.finish_reason}, {u.prompt_tokens}+{u.completion_tokens})")
        state["chat"] = r

    def completion():
        kw = dict(model=state["model"], prompt="The three primary colours are", max_tokens=12, temperature=0)
        a = client.completions.create(**kw)
        b = client.completions.create(**kw)
        expect(a.object == "text_completion" and a.choices[0].text, f"{a}")
        expect(a.choices[0].text == b.choices[0].text, "greedy decoding gave two texts")
        expect(a.usage.completion_tokens <= 12 and a.choices[0].finish_reason in ("stop", "length"), f"{a}")
        # The same prompt as token ids: the same text.
        ids = client.completions.create(model=state["model"], prompt=[[1, 504, 1453]], max_tokens=4, temperature=0)
        expect(ids.usage.prompt_tokens == 3, f"prompt of token ids: {ids.usage}")
        print(f"    completion: {a.choices[0].text!r}")
        state["completion"] = a

    def chat_stream_with_usage():
        stream = client.chat.completions.create(
            model=state["model"], temperature=0, max_tokens=24, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "You answer briefly."},
                      {"role": "user", "content": "What is the capital of France?"}])
        chunks = list(stream)
        expect(len(chunks) >= 3, f"{len(chunks)} chunks")
        expect(chunks[0].choices[0].delta.role == "assistant", f"first chunk {chunks[0]}")
        expect(all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks), "ids differ")
        finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        expect(len(finish) == 1, f"{len(finish)} chunks carry finish_reason")
        last = chunks[-1]
        expect(last.choices == [] and last.usage is not None, f"last chunk {last}")
        expect(all(c.usage is None for c in chunks[:-1]), "usage before the last chunk")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        want = state["chat"]
        expect(text == want.choices[0].message.content, f"streamed {text!r} != {want.choices[0].message.content!r}")
        expect(finish[0].choices[0].finish_reason == want.choices[0].finish_reason, "finish reasons differ")
        expect(last.usage.completion_tokens == want.usage.completion_tokens, f"usage {last.usage}")

    def completion_stream():
        stream = client.completions.create(model=state["model"], prompt="The three primary colours are", max_tokens=12,
                                           temperature=0, stream=True)
        chunks = list(stream)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        expect(text == state["completion"].choices[0].text, f"streamed {text!r}")
        expect(chunks[-1].choices[0].finish_reason in ("stop", "length"), f"last {chunks[-1]}")

    def sampling_and_extras():
        kw = dict(model=state["model"], prompt="Once upon a time", max_tokens=16, temperature=0.9, top_p=0.9, seed=7)
        a = client.completions.create(**kw)
        b = client.completions.create(**kw)
        expect(a.choices[0].text == b.choices[0].text, "the same seed gave two texts")
        # vLLM's extras that serving benchmarks send, and Foresight's own.
        c = client.completions.create(model=state["model"], prompt="Hello", max_tokens=20, temperature=0,
                                      extra_body={"ignore_eos": True, "min_tokens": 20,
                                                  "foresight": {"policy": "dense"}})
        expect(c.usage.completion_tokens == 20 and c.choices[0].finish_reason == "length", f"{c.usage}")
        s = client.completions.create(model=state["model"], prompt="1, 2, 3, 4,", max_tokens=30, temperature=0,
                                      stop=[" 7"])
        expect(" 7" not in s.choices[0].text, f"stop string in {s.choices[0].text!r}")

    def shared_prefix_is_cached():
        document = " ".join(f"Item {i} of the inventory is a box of {i * 7 % 13} apples." for i in range(40))
        first = client.completions.create(model=state["model"], prompt=document + "\nQuestion one:", max_tokens=4,
                                          temperature=0)
        second = client.completions.create(model=state["model"], prompt=document + "\nAnother question:",
                                           max_tokens=4, temperature=0)
        cached = second.usage.prompt_tokens_details.cached_tokens
        expect(first.usage.prompt_tokens > 300, f"{first.usage}")
        expect(cached >= 256, f"the second request reused {cached} of {second.usage.prompt_tokens} prompt tokens")
        print(f"    cached_tokens {cached} of {second.usage.prompt_tokens}")

    def eight_concurrent_streams():
        prompts = [f"Question {i}: name a {w}." for i, w in
                   enumerate(["colour", "fruit", "country", "river", "planet", "metal", "tree", "bird"])]

        def alone(p):
            return client.completions.create(model=state["model"], prompt=p, max_tokens=16, temperature=0)

        def streamed(p):
            chunks = list(client.completions.create(model=state["model"], prompt=p, max_tokens=16, temperature=0,
                                                    stream=True, stream_options={"include_usage": True}))
            return "".join(c.choices[0].text for c in chunks if c.choices), chunks[-1].usage

        solo = [alone(p) for p in prompts]
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            together = list(pool.map(streamed, prompts))
        wall = time.monotonic() - t0
        for p, s, (text, usage) in zip(prompts, solo, together):
            expect(usage.completion_tokens == s.usage.completion_tokens, f"{p}: {usage} vs {s.usage}")
            expect(text == s.choices[0].text, f"{p}: batched {text!r} != alone {s.choices[0].text!r}")
        print(f"    8 streams together in {wall:.1f} s, each text as alone")

    def cancelled_stream():
        stream = client.completions.create(model=state["model"], prompt="Tell me a long story.", max_tokens=3000,
                                           temperature=0, stream=True, extra_body={"ignore_eos": True})
        got = 0
        for chunk in stream:
            got += 1
            if got == 5:
                break
        stream.close()  # the client goes away midway
        expect(aborted(wait_until_idle(15, "the stream whose client went away")) >= 1, "no ABORTED request counted")
        r = client.completions.create(model=state["model"], prompt="Still there?", max_tokens=4, temperature=0)
        expect(r.choices[0].text is not None and r.usage.completion_tokens > 0, "the worker does not serve")

    def cancelled_during_prefill():
        # A fresh ~3K-token prompt takes tens of seconds to prefill here; the client leaves at once.
        salt = int(time.time() * 1000) % 100000
        document = " ".join(f"Record {i}: the value is {(i * 7919 + salt) % 10007}." for i in range(250))
        aborted_before = aborted(wait_until_idle(5, "the worker before the request"))
        t0 = time.monotonic()
        stream = client.completions.create(model=state["model"], prompt=document, max_tokens=8, temperature=0,
                                           stream=True, extra_body={"foresight": {"prefix_reuse": False}})
        stream.close()
        text = wait_until_idle(30, "the request whose client left during its prefill")
        expect(aborted(text) == aborted_before + 1, "the request ran to its end instead of being cancelled")
        print(f"    freed {time.monotonic() - t0:.1f} s after the request was sent")

    def bad_inputs():
        model = state["model"]
        expect_error(*raw.request("POST", "/v1/completions", '{"model": "x", "prompt": "a",'), 400, "not valid JSON")
        expect_error(*raw.request("POST", "/v1/chat/completions", {"messages": "hello"}), 400,
                     "messages must be a list", param="messages")
        expect_error(*raw.request("POST", "/v1/completions", {"prompt": "a", "temperature": "hot"}), 400,
                     "temperature must be a number", param="temperature")
        expect_error(*raw.request("POST", "/v1/completions", {"prompt": "a", "max_tokens": -3}), 400, "max_tokens",
                     param="max_tokens")
        expect_error(*raw.request("POST", "/v1/completions", {"prompt": "a", "frobnicate": 1}), 400,
                     "unrecognized field 'frobnicate'", param="frobnicate")
        expect_error(*raw.request("POST", "/v1/completions", {"prompt": "a"}, token=None), 401, "Authorization")
        expect_error(*raw.request("POST", "/v1/completions", {"prompt": "a"}, token="wrong"), 401, "bearer token")
        expect_error(*raw.request("GET", "/v1/models", token="wrong"), 401, "bearer token")
        expect_error(*raw.request("GET", "/metrics", token=None), 401, "Authorization")
        expect_error(*raw.request("POST", "/v1/completions", {"model": "gpt-4o", "prompt": "a"}), 404,
                     "'gpt-4o' does not exist", param="model")
        expect_error(*raw.request("GET", "/v1/engines"), 404, "no such endpoint")
        long_prompt = "word " * 9000
        error = expect_error(*raw.request("POST", "/v1/completions", {"model": model, "prompt": long_prompt}), 400,
                             "the model's context is 8192", param="prompt")
        expect(re.search(r"the prompt has \d+ tokens", error["message"]), error["message"])
        expect(error["code"] == "context_length_exceeded", f"code {error['code']}")
        expect_error(*raw.request("POST", "/v1/completions", {"model": model, "prompt": "a", "n": 2}), 400,
                     "n must be 1", param="n")
        expect_error(*raw.request("POST", "/v1/completions", b'{"prompt": "\xff\xfe"}'), 400, "UTF-8")
        expect_error(*raw.request("POST", "/v1/completions", "x" * (9 << 20)), 413, "larger than")
        # The client raises the matching exception types.
        try:
            client.completions.create(model="no-such-model", prompt="a", max_tokens=1)
            raise AssertionError("an unknown model was accepted")
        except openai.NotFoundError:
            pass
        try:
            openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()
            raise AssertionError("a wrong token was accepted")
        except openai.AuthenticationError:
            pass
        expect(worker.proc.poll() is None, "the worker died")

    def metrics_and_health():
        status, ctype, data = raw.request("GET", "/metrics")
        expect(status == 200 and ctype.startswith("text/plain"), f"/metrics: {status} {ctype}")
        text = data.decode()
        expect(metric(text, "foresight_worker_generation_tokens_total") > 100, "generation tokens")
        expect(metric(text, "foresight_worker_prompt_tokens_total") > 100, "prompt tokens")
        expect(metric(text, "foresight_worker_prefix_cache_hit_tokens_total") >= 256, "prefix hit tokens")
        expect(metric(text, "foresight_worker_time_to_first_token_seconds_count") >= 10, "TTFT histogram")
        expect(metric(text, "foresight_worker_waiting_requests") == 0, "waiting requests")
        expect(metric(text, "foresight_worker_transfer_buffer_bytes") > 0, "transfer buffers of the cache client")
        for name in ("foresight_worker_inter_token_latency_seconds_count",
                     "foresight_worker_request_duration_seconds_count", "foresight_worker_kv_blocks_fetched_total",
                     "foresight_worker_stalls_total"):
            metric(text, name)
        expect('foresight_worker_requests_total{finish_reason="max_tokens"}' in text, "requests by finish reason")
        expect('foresight_worker_request_errors_total{code="INVALID_ARGUMENT"}' in text, "errors by code")
        status, _, data = raw.request("GET", "/health", token=None)
        expect(status == 200, f"/health {status}")

    checks.run("GET /health and /v1/models", health_and_models)
    if "model" not in state:
        return
    checks.run("chat completion", chat)
    checks.run("completion (text and token ids)", completion)
    if "chat" in state:
        checks.run("chat stream with include_usage", chat_stream_with_usage)
    if "completion" in state:
        checks.run("completion stream", completion_stream)
    checks.run("sampling, stop strings, ignore_eos/min_tokens, foresight extras", sampling_and_extras)
    checks.run("shared prefix reported as cached_tokens", shared_prefix_is_cached)
    checks.run("8 concurrent streams", eight_concurrent_streams)
    checks.run("stream cancelled midway", cancelled_stream)
    checks.run("stream cancelled during its prefill", cancelled_during_prefill)
    checks.run("bad inputs: statuses and error objects", bad_inputs)
    checks.run("/metrics and /health after all that", metrics_and_health)


if __name__ == "__main__":
    sys.exit(main())
