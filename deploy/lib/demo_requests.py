#!/usr/bin/env python3
"""The demo's client (deploy/run-demo.sh): chat requests to foresight-workers' OpenAI-compatible API,
streamed (server-sent events), with the standard library only, so the demo needs nothing installed.

  demo_requests.py one  --url URL --name NAME --document FILE --question Q [--max-tokens N]
                        [--no-prefix-reuse] [--raw] --out FILE.json
      One request; its answer is printed as it streams in, then its statistics.
  demo_requests.py many --url URL --document FILE --question Q [--question Q ...] [--max-tokens N]
                        [--raw] --out FILE.json
      Every question at once (one stream each) to one worker, which batches them; a table at the end.
  demo_requests.py compare A.json B.json [--same-prompt]
      How much sooner B reached its first token than A (and, with --same-prompt, whether the text
      is the same).

Each request's statistics come from the `usage` chunk and the worker's `foresight` object (docs/worker.md,
"Responses").
"""
import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request

POLICIES = {
    "dense": "dense decode (every block)",
    "ap": "AttentionPredictor-guided sparse decode, as served (query-refined)",
    "attention_predictor": "AttentionPredictor-guided sparse decode (the published method)",
}


def describe_policy(policy):
    if policy in POLICIES:
        return POLICIES[policy]
    if policy.startswith("ap("):
        return "AttentionPredictor-guided sparse decode (query-refined)"
    return f"{policy} sparse decode"


def stream_chat(url, prompt, max_tokens, prefix_reuse=True, on_text=None, raw=False):
    """One streamed chat completion (raw: a completion of the prompt as it is, no chat template);
    returns the text, usage, the worker's statistics and timings."""
    body = {
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if raw:
        body["prompt"] = prompt
    else:
        body["messages"] = [{"role": "user", "content": prompt}]
    if not prefix_reuse:
        body["foresight"] = {"prefix_reuse": False}
    endpoint = "/completions" if raw else "/chat/completions"
    request = urllib.request.Request(url.rstrip("/") + endpoint, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.monotonic()
    first = None
    text, usage, stats, finish = [], None, None, None
    try:
        response = urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"demo: {url} answered {e.code}: {e.read().decode(errors='replace')}")
    except urllib.error.URLError as e:
        raise SystemExit(f"demo: cannot reach {url}: {e.reason}")
    with response:
        for received in response:
            line = received.decode().rstrip("\r\n")
            if not line.startswith("data: "):
                continue  # blank separators and ": keep-alive" comments
            data = line[len("data: "):]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise SystemExit(f"demo: the request failed: {chunk['error'].get('message')}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("foresight"):
                stats = chunk["foresight"]
            for choice in chunk.get("choices", []):
                piece = (choice.get("text") if raw else choice.get("delta", {}).get("content")) or ""
                if piece and first is None:
                    first = time.monotonic()
                if piece:
                    text.append(piece)
                    if on_text:
                        on_text(piece)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
    end = time.monotonic()
    if usage is None or stats is None:
        raise SystemExit(f"demo: {url}'s stream ended without its usage or statistics")
    return {
        "text": "".join(text),
        "usage": usage,
        "stats": stats,
        "finish_reason": finish,
        "client_ttft_seconds": (first or end) - start,
        "client_seconds": end - start,
    }


def print_stats(r, name, url, prompt_bytes):
    s, u = r["stats"], r["usage"]
    extra = f", weights {s['weights']}" if s.get("weights") else ""
    budget = f", budget {s['budget']}" if s["policy"] != "dense" else ""
    cached = u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    print(f"   -- {name}: {url}, {prompt_bytes} bytes of prompt, {describe_policy(s['policy'])} "
          f"(policy {s['policy']}{budget}{extra})")
    print(f"   prompt {u['prompt_tokens']} tokens: cached {cached} (imported from the cache service; "
          f"{s.get('seed_hit_tokens', 0)} of them with this worker's seed rows), prefilled {s['prefill_tokens']}")
    print(f"   time to first token {s['time_to_first_token_seconds']:.2f} s (prefix import "
          f"{s['prefix_import_seconds']:.2f} s); prefill {s['prefill_tokens_per_second']:.0f} tok/s; decode "
          f"{s['decode_tokens_per_second']:.1f} tok/s ({u['completion_tokens']} tokens, finish {r['finish_reason']}, "
          f"KV {s['kv_mode']})")
    print(f"   fetched {s['blocks_fetched']} blocks ({s['bytes_fetched'] / 2**20:.1f} MiB); published "
          f"{s['blocks_published']} blocks ({s['bytes_published'] / 2**20:.1f} MiB); stalls {s['stalls']} "
          f"({s['stall_seconds'] * 1e3:.1f} ms); attended {s['blocks_attended_per_step']:.0f} of "
          f"{s['blocks_total_per_step']:.0f} blocks per step")


def prompt_of(args, question):
    with open(args.document) as f:
        return f.read() + "\n\n" + question + "\n"


def one(args):
    prompt = prompt_of(args, args.question[0])
    print(f"== {args.name}: {args.question[0]}")
    print("   ", end="", flush=True)
    r = stream_chat(args.url, prompt, args.max_tokens, prefix_reuse=not args.no_prefix_reuse, raw=args.raw,
                    on_text=lambda piece: print(piece.replace("\n", "\n   "), end="", flush=True))
    print()
    print_stats(r, args.name, args.url, len(prompt.encode()))
    r["question"] = args.question[0]
    with open(args.out, "w") as f:
        json.dump(r, f)


def many(args):
    prompts = [prompt_of(args, q) for q in args.question]
    results = [None] * len(prompts)
    errors = []

    def run(i):
        try:
            results[i] = stream_chat(args.url, prompts[i], args.max_tokens, raw=args.raw)
        except SystemExit as e:
            errors.append(str(e))

    print(f"== {len(prompts)} requests at once to {args.url}, each the same document and its own question")
    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    if errors:
        raise SystemExit(errors[0])
    print(f"   {'#':>2} {'TTFT':>7} {'cached':>13} {'prefilled':>9} {'decode':>10} {'batch':>5}  answer")
    for i, (q, r) in enumerate(zip(args.question, results)):
        s, u = r["stats"], r["usage"]
        cached = u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        answer = " ".join(r["text"].split())
        print(f"   {i + 1:>2} {s['time_to_first_token_seconds']:>6.2f}s {cached:>6}/{u['prompt_tokens']:<6} "
              f"{s['prefill_tokens']:>9} {s['decode_tokens_per_second']:>6.1f}tok/s {s.get('max_batch', 1):>5}  "
              f"{q}\n{'':>47}-> {answer[:100]}{'...' if len(answer) > 100 else ''}")
    generated = sum(r["usage"]["completion_tokens"] for r in results)
    print(f"   all {len(prompts)} done in {wall:.2f} s: {generated} tokens generated, {generated / wall:.1f} tok/s "
          f"in all; 'batch' is the most requests that ran together in one of a request's forward steps")
    with open(args.out, "w") as f:
        json.dump({"wall_seconds": wall, "requests": results}, f)


def compare(args):
    with open(args.cold) as f:
        a = json.load(f)
    with open(args.warm) as f:
        b = json.load(f)
    ta, tb = a["stats"]["time_to_first_token_seconds"], b["stats"]["time_to_first_token_seconds"]
    cached = b["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)
    line = (f"{tb:.2f} s to the first token against {ta:.2f} s: {ta / max(tb, 1e-9):.1f}x sooner; "
            f"{cached} of {b['usage']['prompt_tokens']} prompt tokens imported")
    if args.same_prompt:
        if a["text"] == b["text"]:
            same = "the same generated text"
        else:
            at, bt = a["text"], b["text"]
            at_ = next((i for i in range(min(len(at), len(bt))) if at[i] != bt[i]), min(len(at), len(bt)))
            same = f"DIFFERENT text from character {at_} on"
        line += f"; {same}"
    print(f"== {args.title}: {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("one", "many"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True, help="the worker's API base URL (http://HOST:PORT/v1)")
        p.add_argument("--document", required=True)
        p.add_argument("--question", action="append", required=True)
        p.add_argument("--max-tokens", type=int, default=48)
        p.add_argument("--out", required=True)
        p.add_argument("--raw", action="store_true",
                       help="POST /v1/completions with the prompt as it is (models without a chat template)")
        if name == "one":
            p.add_argument("--name", required=True)
            p.add_argument("--no-prefix-reuse", action="store_true",
                           help="prefill the whole prompt even if a prefix of it is published")
    p = sub.add_parser("compare")
    p.add_argument("cold")
    p.add_argument("warm")
    p.add_argument("--title", required=True)
    p.add_argument("--same-prompt", action="store_true")
    args = parser.parse_args()
    {"one": one, "many": many, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
