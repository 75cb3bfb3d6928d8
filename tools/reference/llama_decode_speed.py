#!/usr/bin/env python3
"""llama.cpp's dense decode speed on a GGUF at a given context and thread count: the anchor that
`foresight-bench decode` is compared with (docs/worker.md). Prints one JSON line.

Usage: .venv/bin/python tools/reference/llama_decode_speed.py --model M.gguf --context 2048 --steps 32 --threads 2
"""
import argparse
import json
import time

import llama_cpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.context + args.steps + 8, n_batch=512,
                          n_threads=args.threads, verbose=False)
    vocab = llm.n_vocab()
    prompt = [(i * 7919 + 13) % vocab for i in range(args.context)]
    t0 = time.time()
    llm.eval(prompt)
    prefill_s = time.time() - t0
    t0 = time.time()
    for s in range(args.steps):
        llm.eval([(s * 31 + 5) % vocab])
    decode_s = time.time() - t0
    print(json.dumps({"engine": "llama.cpp", "context": args.context, "threads": args.threads,
                      "prefill_tokens_per_second": args.context / prefill_s,
                      "decode_ms_per_token": 1e3 * decode_s / args.steps,
                      "decode_tokens_per_second": args.steps / decode_s}))


if __name__ == "__main__":
    main()
