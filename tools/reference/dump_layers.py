#!/usr/bin/env python3
"""Dumps every intermediate float tensor of llama.cpp's graph (ggml's eval callback) for the first
tokens of a prompt, evaluated as one batch: how the engine's arithmetic was matched to llama.cpp's
operation by operation (docs/worker.md, "Verification"). Writes OUT.npz, one array per tensor, named
as llama.cpp names them ("attn_norm-0", "Qcur-0", "kq-0", ...; a repeated name gets "#1", "#2"),
shaped [ne3, ne2, ne1, ne0], and prints the names in evaluation order.
Needs the reference venv (tools/reference/setup-venv.sh).

Usage: .venv/bin/python tools/reference/dump_layers.py --model M.gguf --text "..." --tokens 2 --out /tmp/l
"""
import argparse
import ctypes

import llama_cpp
import numpy as np


class GgmlTensor(ctypes.Structure):
    # struct ggml_tensor (ggml.h): only the fields up to `name` are read.
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64)]


GGML_F32, GGML_F16 = 0, 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--tokens", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tensors, order = {}, []

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_tensor(ptr, ask, _user):
        if ask:
            return True  # observe every tensor
        t = ctypes.cast(ptr, ctypes.POINTER(GgmlTensor)).contents
        if t.type not in (GGML_F32, GGML_F16) or not t.data:
            return True
        size = 4 if t.type == GGML_F32 else 2
        ne, nb = list(t.ne), list(t.nb)
        span = sum((ne[i] - 1) * nb[i] for i in range(4)) + size
        raw = np.frombuffer(ctypes.string_at(t.data, span), dtype=np.float32 if size == 4 else np.float16)
        arr = np.lib.stride_tricks.as_strided(raw, shape=ne[::-1], strides=nb[::-1]).astype(np.float32)
        name = base = t.name.decode(errors="replace")
        k = 0
        while name in tensors:
            k += 1
            name = f"{base}#{k}"
        tensors[name] = arr
        order.append(name)
        return True

    llm = llama_cpp.Llama(model_path=args.model, n_ctx=1024, n_batch=512, logits_all=True,
                          n_threads=args.threads, verbose=False)
    params = llm.context_params
    params.cb_eval = on_tensor
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    tokens = llm.tokenize(args.text.encode("utf-8"), add_bos=True, special=True)[: args.tokens]
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    batch.n_tokens = len(tokens)
    for i, tok in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, i, 1, 1
        batch.seq_id[i][0] = 0
    if llama_cpp.llama_decode(ctx, batch) != 0:
        raise SystemExit("llama_decode failed")
    np.savez(args.out + ".npz", **{k.replace("/", "_"): v for k, v in tensors.items()})
    print("tokens", tokens)
    for name in order:
        print(name, tensors[name].shape)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)


if __name__ == "__main__":
    main()
