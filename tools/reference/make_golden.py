#!/usr/bin/env python3
"""Makes the llama.cpp golden files that the worker's parity tests assert against in every run
(tests/worker/tokenizer_test.cc, tests/worker/model_reference_test.cc; the format is described in
docs/worker.md, "Golden files from llama.cpp"):

  tests/worker/data/llama_cpp_tokens.json   llama.cpp's token ids for a few thousand strings, and
                                            for every token's own text (the vocabulary sweep)
  tests/worker/data/llama_cpp_logits.json   llama.cpp's top-k next-token logits for a few prompts,
                                            at every position, and llama.cpp's own spread

Both record the llama-cpp-python version, llama.cpp's system info, and the model file's name,
size and SHA-256. Needs the reference venv (tools/reference/setup-venv.sh) and the default model
(deploy/fetch-model.sh). The output is deterministic for one llama.cpp build and model.

  .venv/bin/python tools/reference/make_golden.py --model M.gguf [--out-dir tests/worker/data]
  .venv/bin/python tools/reference/make_golden.py --model M.gguf --check

--check writes nothing: it compares this venv's llama.cpp with the committed files (ids exactly,
logits to --check-tolerance) and exits 1 on a difference, naming it: the live comparison, for a
newer llama.cpp.
"""
import argparse
import hashlib
import json
import os
import random
import sys

import llama_cpp
import numpy as np

TOKENS_FORMAT = "foresight-llama-cpp-tokens/1"
LOGITS_FORMAT = "foresight-llama-cpp-logits/1"
TOP_K = 20

# --- strings for the tokenizer -------------------------------------------------------------------

ENGLISH_WORDS = (
    "the of and to in is was he for it with as his on be at by had are but from or have an they "
    "which one you were all we her she there would their will when who him been has more if no out "
    "so up said what its about than into them can only other time new some could these two may "
    "first then do any like my now over such our man me even most made after also did many before "
    "must through back years where much your way well down should because each just those people "
    "how too little state good very make world still own see men work long get here between both "
    "life being under never day same another know while last might us great old year off come since "
    "against go came right used take three Hello World Cache Token Paris Berlin Monday GPU CPU NVMe "
    "don't can't won't it's I'm they're we've you'd she'll isn't AttentionPredictor llama.cpp"
).split()

CODE_SNIPPETS = [
    "def f(x):\n    return x**2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <vector>\nint main(int argc, char** argv) {\n  return argc > 1 ? 0 : 1;\n}\n",
    "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(1, 2)}`);\n",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;",
    "$ ls -la | grep foo > out.txt && echo \"done\" 2>&1",
    "<html><body class=\"x\"><p>text &amp; more</p></body></html>",
    "{\"key\": [1, 2, {\"n\": null, \"t\": true}], \"s\": \"a\\\"b\"}",
    "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![0xff; 16];\n    Ok(())\n}",
    "if x != nil {\n\treturn fmt.Errorf(\"bad: %w\", err)\n}",
    "    @property\n    def name(self) -> str:\n        return self._name\n",
    "x += 12; y -= 0x1F; z <<= 3; w >>= 1; a ||= b; c ??= d;",
    "// TODO(foo): fix this\n/* block\n * comment */\n",
    "matrix[i][j] = matrix[i - 1][j - 1] + cost(a[i], b[j]);",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\n",
    "git commit -m 'fix: handle \\r\\n line endings' --no-verify",
]

UNICODE_SNIPPETS = [
    "naïve café résumé Ünïcödé", "日本語のテキストと漢字。", "한국어 텍스트입니다", "Ελληνικά κείμενα",
    "Русский текст, ёлка!", "العربية نص", "עברית", "हिन्दी पाठ", "ภาษาไทย", "Tiếng Việt có dấu",
    "Ⅻ ½ ² ٣ ۴ ৫", "\u00a0nbsp\u2003em\u3000ideo", "zero\u200bwidth\u200cjoiner\u200d",
    "’curly’ “quotes” — dash … ellipsis", "Math: ∑_{i=1}^{n} i² = n(n+1)(2n+1)/6, ∀x∈ℝ",
    "mixed 中文 and English 123 words", "e\u0301 (combining) vs é (precomposed)", "ﬁ ﬂ ligatures Ａｂｃ fullwidth",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 math", "\u202eright-to-left override\u202c", "ÅÆØåæø ß ẞ İı ǅ",
    "Ꭰ Ꭱ Ꭲ Cherokee", "ქართული", "Հայերեն", "አማርኛ", "தமிழ்", "ᚠᚢᚦ runes",
]

EMOJI = [
    "😀", "🎉", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "1️⃣", "❤️", "🤦🏼‍♂️", "🚀", "🔥", "🧑‍💻", "©️", "™",
    "🫠", "🐈‍⬛", "☕", "⚡", "🍕",
]

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " \t\n\r",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "éèêëàâäôöûüçñßøåæœ", "αβγδεζηθικλμνξοπρστυφχψω",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "的一是不了人我在有他这为之大来以个中上们", "あいうえおかきくけこアイウエオ",
    "😀😃😄😁😆😅🤣😂🙂🙃", "٠١٢٣٤٥٦٧٨٩", "→←↑↓∞≈≠≤≥", "\u00a0\u2009\u200b\u3000",
]

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]

EDGE_CASES = [
    "", " ", "  ", "\n", "\n\n", "\r\n", "\t", "x", " x", "  x", "x  ", "a  b   c    d",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D", "I'M sure THEY'LL say WE'VE", "''''", "'",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>after",
    "a<|im_end|>b<|im_start|>c", "<|im_start|><|im_end|><|endoftext|>", "<|im_start", "<|im_end|",
    "<|im_start|x", "im_start|>", "< |im_end| >", "<|IM_END|>", "<|im_end|><|im_end|>",
    "a" * 300, "ab" * 150, "z" * 257, "é" * 100, "😀" * 50, "-" * 120, "=" * 80, "." * 64, "_" * 33,
    " " * 200, "\n" * 100, "\t" * 40, " \n" * 50, "\r\n" * 30, "x" + " " * 127 + "y",
    "1" * 100, "1234567890" * 5, "3.14159265358979323846264338327950288419716939937510",
    "URL: https://example.com/path?q=1&x=y#frag", "email: someone@example.org",
] + ["".join(chr(c) for c in range(lo, lo + 32)) for lo in range(0, 128, 32)]

# Not valid UTF-8: stored as "hex" in the golden file (llama.cpp tokenises the bytes as given).
INVALID_UTF8 = [
    b"\xff", b"\x80", b"abc\xc3", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80 surrogate", b"\xf0\x9f\x98",
    b"\xc0\xaf overlong", b"\xf8\x88\x80\x80\x80", b"ok \xfe\xfe ok", b"\x00\x01\xff\xfe\x80\xc0\xe0\xf0 mix",
]


def english(rng):
    words = [rng.choice(ENGLISH_WORDS) for _ in range(rng.randint(1, 14))]
    if rng.random() < 0.5:
        words[0] = words[0].capitalize()
    text = " ".join(words)
    return text + rng.choice(["", ".", "!", "?", ",", ";", ":", "...", ". ", ".\n"])


def code(rng):
    s = rng.choice(CODE_SNIPPETS)
    if rng.random() < 0.4:
        ident = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(1, 12)))
        s = s.replace("x", ident, 1)
    if rng.random() < 0.3:
        s = s.replace("    ", "\t")
    return s


def unicode_text(rng):
    parts = [rng.choice(UNICODE_SNIPPETS)]
    if rng.random() < 0.5:
        parts.append(rng.choice(UNICODE_SNIPPETS + [english(rng)]))
    return rng.choice([" ", "", "\n", ", "]).join(parts)


def whitespace_runs(rng):
    out = []
    for _ in range(rng.randint(1, 4)):
        out.append("".join(rng.choice(" \t\n\r\u00a0") for _ in range(rng.randint(1, 16))))
        if rng.random() < 0.7:
            out.append(rng.choice(ENGLISH_WORDS))
    return "".join(out)


def digits(rng):
    kind = rng.random()
    if kind < 0.3:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
    if kind < 0.5:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if kind < 0.7:
        return f"{rng.randint(0, 10**9):,}" + rng.choice(["", " items", "$", "%", "px"])
    return " ".join(rng.choice(["v1.2.3", "2026-12-06", "12:34:56", "0x" + format(rng.getrandbits(32), "x"),
                                "1e-9", "+44 20 7946 0958", "127.0.0.1:7600", str(rng.randint(0, 99999))])
                    for _ in range(rng.randint(1, 4)))


def emoji(rng):
    out = []
    for _ in range(rng.randint(1, 6)):
        out.append(rng.choice(EMOJI))
        if rng.random() < 0.4:
            out.append(rng.choice([" ", "", "!", " ok ", "\n"]))
    return "".join(out)


def mixed(rng):
    parts = []
    for _ in range(rng.randint(1, 6)):
        alphabet = rng.choice(ALPHABETS)
        parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))))
        if rng.random() < 0.5:
            parts.append(rng.choice([" ", "  ", "\n", "'", "'s ", " 's", "\t", ""] + SPECIALS))
    return "".join(parts)


GENERATORS = [("english", english), ("code", code), ("unicode", unicode_text),
              ("whitespace", whitespace_runs), ("digits", digits), ("emoji", emoji), ("mixed", mixed)]


def token_cases(count, seed):
    """(category, text as bytes) pairs: every fixed case, then random ones up to `count`."""
    rng = random.Random(seed)
    cases = [("edge", s.encode()) for s in EDGE_CASES]
    cases += [("code", s.encode()) for s in CODE_SNIPPETS] + [("unicode", s.encode()) for s in UNICODE_SNIPPETS]
    cases += [("invalid_utf8", b) for b in INVALID_UTF8]
    while len(cases) < count:
        name, make = GENERATORS[len(cases) % len(GENERATORS)]
        cases.append((name, make(rng).encode()))
    return cases


# --- prompts for the logits ----------------------------------------------------------------------

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
    "Numbers: 1, 2, 3, 5, 8, 13, 21, 34, 55, 89,",
    "Übersetzung: naïve café — 日本語 🚀 «quotes» and\ttabs\n\n  indented",
]


def top_k(row, k):
    # Stable on ties: highest value first, then the lower id.
    ids = np.lexsort((np.arange(row.size), -row))[:k]
    # Each value as the shortest decimal that reads back as the same float32.
    return [int(i) for i in ids], [float(np.format_float_positional(row[i], unique=True)) for i in ids]


def load_llama(model, **kwargs):
    """llama.cpp on its plain CPU kernels: without the extra buffer types (weight repacking, AMX),
    which differ in arithmetic from the AVX-512 dot products the engine follows, and whose AMX
    matmul crashes where the VM does not grant the AMX tile state (llama-cpp-python 0.3.36, Sapphire
    Rapids guest)."""
    params = llama_cpp.llama_cpp.llama_model_default_params

    def plain_params():
        p = params()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_cpp.llama_model_default_params = plain_params
    try:
        return llama_cpp.Llama(model_path=model, verbose=False, **kwargs)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = params


# --- provenance ----------------------------------------------------------------------------------

def model_record(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"file": os.path.basename(path), "bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def generator_record(threads):
    info = llama_cpp.llama_print_system_info()
    return {"script": "tools/reference/make_golden.py", "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp_system_info": info.decode() if isinstance(info, bytes) else str(info),
            "threads": threads, "use_extra_bufts": False}


def write_json_lines(path, head, key, items):
    """One JSON object: `head`'s fields, then `key` as a list with one item per line (diffable)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "%s": [\n' % key)
        f.write(",\n".join(json.dumps(it, ensure_ascii=False, separators=(",", ":")) for it in items))
        f.write("\n]}\n")


# --- main ----------------------------------------------------------------------------------------

def make_tokens(model, count, seed):
    llm = load_llama(model, vocab_only=True)
    items = []
    for i, (category, data) in enumerate(token_cases(count, seed)):
        # Strings with special-token text are tokenised both ways; the rest alternate.
        modes = [False, True] if b"<|" in data else [i % 2 == 0]
        for special in modes:
            item = {"category": category, "special": special}
            try:
                item["text"] = data.decode("utf-8")
            except UnicodeDecodeError:
                item["hex"] = data.hex()
            item["ids"] = llm.tokenize(data, add_bos=False, special=special)
            items.append(item)
    return items


def make_vocabulary_sweep(model):
    """llama.cpp's encoding of every token's own text (special tokens not parsed): which BPE merges
    a few thousand strings cannot all reach. Stored compactly: the ids not swept (text empty or
    not valid UTF-8 on its own) and the exceptions to "encodes to itself"."""
    llm = load_llama(model, vocab_only=True)
    not_swept, exceptions = [], {}
    for i in range(llm.n_vocab()):
        data = llm.detokenize([i])
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = b""
        if not data:
            not_swept.append(i)
            continue
        ids = llm.tokenize(data, add_bos=False, special=False)
        if ids != [i]:
            exceptions[str(i)] = ids
    return {"what": "each token's text (detokenized, special=false) encoded with special=false: [id] "
                    "unless listed in exceptions; ids in not_swept were not tried",
            "vocab": llm.n_vocab(), "not_swept": not_swept, "exceptions": exceptions}


def make_logits(model, threads):
    llm = load_llama(model, n_ctx=1024, n_batch=512, logits_all=True, n_threads=threads)
    vocab = llm.n_vocab()
    items, spread_max, spread_sum, spread_top1, min_overlap = [], 0.0, 0.0, [0, 0], TOP_K
    for text in PROMPTS:
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(tokens)  # one batch, as a prefill
        batched = np.array(llm.scores[: len(tokens)], dtype=np.float32)  # a copy: eval reuses the rows
        # llama.cpp against itself: the same tokens one at a time (another summation order).
        llm.reset()
        single = np.empty_like(batched)
        for t, tok in enumerate(tokens):
            llm.eval([tok])
            single[t] = llm.scores[t]
        positions = []
        for t in range(len(tokens)):
            ids, values = top_k(batched[t], TOP_K)
            diff = np.abs(single[t][ids] - batched[t][ids]).astype(np.float64)
            spread_max = max(spread_max, float(np.max(diff)))
            spread_sum += float(np.sum(diff))
            spread_top1[0] += int(np.argmax(single[t]) == ids[0])
            min_overlap = min(min_overlap, len(set(ids) & set(top_k(single[t], TOP_K)[0])))
            spread_top1[1] += 1
            positions.append({"ids": ids, "logits": values})
        items.append({"text": text, "tokens": tokens, "positions": positions})
    spread = {"what": "llama.cpp token by token against llama.cpp batched, these positions and top-k ids",
              "max_abs_diff": spread_max, "mean_abs_diff": spread_sum / (spread_top1[1] * TOP_K),
              "top1_same": spread_top1[0], "positions": spread_top1[1], "min_top_k_overlap": min_overlap}
    return vocab, items, spread


def check(path, fresh_items, key, compare):
    with open(path, encoding="utf-8") as f:
        committed = json.load(f)[key]
    if len(committed) != len(fresh_items):
        print(f"{path}: {len(committed)} {key} committed, {len(fresh_items)} made now")
        return False
    bad = [i for i, (a, b) in enumerate(zip(committed, fresh_items)) if not compare(a, b)]
    for i in bad[:5]:
        print(f"{path}: {key}[{i}] differs:\n  committed {json.dumps(committed[i])[:300]}\n"
              f"  now       {json.dumps(fresh_items[i])[:300]}")
    print(f"{path}: {len(fresh_items) - len(bad)}/{len(fresh_items)} {key} agree")
    return not bad


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the default model's GGUF (deploy/fetch-model.sh)")
    ap.add_argument("--out-dir", default=os.path.join(here, "..", "..", "tests", "worker", "data"))
    ap.add_argument("--count", type=int, default=2900, help="token strings (before special-mode doubles)")
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    ap.add_argument("--check-tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    if not os.path.isfile(args.model):
        sys.exit(f"make_golden: no model at {args.model}; fetch it with deploy/fetch-model.sh")

    tokens = make_tokens(args.model, args.count, args.seed)
    sweep = make_vocabulary_sweep(args.model)
    vocab, prompts, spread = make_logits(args.model, args.threads)
    tokens_path = os.path.join(args.out_dir, "llama_cpp_tokens.json")
    logits_path = os.path.join(args.out_dir, "llama_cpp_logits.json")
    if args.check:
        def same_logits(a, b):
            return a["tokens"] == b["tokens"] and all(
                pa["ids"][0] == pb["ids"][0] and
                max(abs(x - y) for x, y in zip(pa["logits"], pb["logits"])) <= args.check_tolerance
                for pa, pb in zip(a["positions"], b["positions"]))
        ok = check(tokens_path, tokens, "cases", lambda a, b: a == b)
        with open(tokens_path, encoding="utf-8") as f:
            same_sweep = json.load(f)["vocabulary_sweep"] == sweep
        print(f"{tokens_path}: vocabulary sweep {'agrees' if same_sweep else 'DIFFERS'}")
        ok = ok and same_sweep
        ok = check(logits_path, prompts, "prompts", same_logits) and ok
        sys.exit(0 if ok else 1)

    provenance = {"generator": generator_record(args.threads), "model": model_record(args.model)}
    os.makedirs(args.out_dir, exist_ok=True)
    write_json_lines(tokens_path, {"format": TOKENS_FORMAT, **provenance, "add_bos": False,
                                   "vocabulary_sweep": sweep}, "cases", tokens)
    write_json_lines(logits_path, {"format": LOGITS_FORMAT, **provenance, "vocab": vocab, "top_k": TOP_K,
                                   "add_bos": True, "llama_cpp_spread": spread}, "prompts", prompts)
    for p in (tokens_path, logits_path):
        print(f"{p}: {os.path.getsize(p)} bytes")
    print(f"llama.cpp's own spread: {json.dumps(spread)}")


if __name__ == "__main__":
    main()
