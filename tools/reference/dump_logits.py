#!/usr/bin/env python3
"""Dumps llama.cpp's next-token logits for a few prompts (every position): the reference for
tests/worker/model_reference_test.cc. Writes OUT.json ({"prompts": [{"text", "tokens"}], "vocab"})
and OUT.f32 (float32 logits, prompt after prompt, [tokens x vocab] each).
Needs the reference venv (tools/reference/setup-venv.sh).

Usage: .venv/bin/python tools/reference/dump_logits.py --model M.gguf --out /tmp/ref [--threads 2]
"""
import argparse
import json

import llama_cpp
import numpy as np

PROMPTS = [
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "# Print the first ten numbers\nfor i in range(10):\n    print(",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the boiling point of water at sea level?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village nestled between rolling hills and a quiet river, there lived an "
    "old clockmaker named Elias. Every morning he opened his shop at seven, wound the great clock in the "
    "window, and waited for the children who came by on their way to school. One winter morning, however, "
    "the great clock did not tick. Elias",
    "Photosynthesis is the process by which green plants and some other organisms use sunlight to "
    "synthesize foods from carbon dioxide and water. Photosynthesis in plants generally involves the green "
    "pigment chlorophyll and generates oxygen as a byproduct. In summary, photosynthesis converts",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=1024, n_batch=512, logits_all=True,
                          n_threads=args.threads, verbose=False)
    meta = {"vocab": llm.n_vocab(), "prompts": []}
    with open(args.out + ".f32", "wb") as f:
        for text in PROMPTS:
            tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            llm.reset()
            llm.eval(tokens)
            logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float32)
            f.write(logits.tobytes())
            meta["prompts"].append({"text": text, "tokens": tokens})
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
