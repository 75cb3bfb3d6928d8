#!/usr/bin/env python3
"""Dumps llama.cpp's tokenisation of a few thousand varied strings (unicode, code, whitespace,
numbers, contractions, special tokens) as JSON lines {"text", "special", "ids"}: the reference for
tests/worker/tokenizer_reference_test.cc. Needs the reference venv (tools/reference/setup-venv.sh).

Usage: .venv/bin/python tools/reference/dump_tokens.py --model M.gguf --out tokens.jsonl [--count N]
"""
import argparse
import json
import random

import llama_cpp

SNIPPETS = [
    "Hello, world!", "I'm sure they'll say we've done it; you'd agree, wouldn't you?",
    "THE QUICK BROWN FOX'S TAIL", "def f(x):\n    return x**2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "    leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed \n\n\n  \t", "1234567890 3.14159 -42 1e-9 0x1F 1,000,000",
    "naïve café résumé Ünïcödé", "日本語のテキストと漢字。", "한국어 텍스트입니다", "Ελληνικά κείμενα",
    "Русский текст, ёлка!", "العربية نص", "עברית", "हिन्दी पाठ", "emoji 😀🎉👍🏽 👨‍👩‍👧‍👦",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>after",
    "a<|im_end|>b<|im_start|>c", "URL: https://example.com/path?q=1&x=y#frag",
    "email: someone@example.org", "JSON: {\"key\": [1, 2, {\"n\": null}]}", "$ ls -la | grep foo > out.txt",
    "Ⅻ ½ ² ٣ ۴ ৫", "\u00a0nbsp\u2003em\u3000ideo", "zero\u200bwidth", "’curly’ “quotes” — dash … ellipsis",
    "'s 't 're 've 'm 'll 'd 'S 'T", "   ", "\n", "", "x", " x", "  x", "x  ", "a  b   c    d",
    "<html><body class=\"x\">text</body></html>", "SELECT * FROM t WHERE id = 42;",
    "Math: ∑_{i=1}^{n} i² = n(n+1)(2n+1)/6, ∀x∈ℝ", "mixed 中文 and English 123 words",
]

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " \t\n\r",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "éèêëàâäôöûüçñßøåæœ", "αβγδεζηθικλμνξοπρστυφχψω",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "的一是不了人我在有他这为之大来以个中上们", "あいうえおかきくけこアイウエオ",
    "😀😃😄😁😆😅🤣😂🙂🙃", "٠١٢٣٤٥٦٧٨٩", "→←↑↓∞≈≠≤≥", "\u00a0\u2009\u200b\u3000",
]


def random_string(rng):
    kind = rng.random()
    if kind < 0.3:
        s = rng.choice(SNIPPETS)
        if rng.random() < 0.5:
            s = s + rng.choice(SNIPPETS)
        return s
    parts = []
    for _ in range(rng.randint(1, 12)):
        alphabet = rng.choice(ALPHABETS)
        parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))))
        if rng.random() < 0.5:
            parts.append(rng.choice([" ", "  ", "\n", "'", "'s ", " 's", "\t", "", "<|im_end|>"]))
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    rng = random.Random(args.seed)
    texts = list(SNIPPETS) + [random_string(rng) for _ in range(args.count - len(SNIPPETS))]
    with open(args.out, "w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            special = i % 2 == 0
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            out.write(json.dumps({"text": text, "special": special, "ids": ids}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
