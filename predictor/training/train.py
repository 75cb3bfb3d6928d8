#!/usr/bin/python3
"""Train the AttentionPredictor CNN on Foresight traces (docs/trace-format.md).

Runs on Debian's CPU PyTorch: /usr/bin/python3 with python3-torch, python3-numpy and
libopenblas0-pthread (without it torch uses the reference BLAS, ~25x slower).

Each sample is what the predictor sees at a decode step: the last 64 pooled (block-max) dense
attention rows of one layer and query head, cropped to the candidate columns (sink and local
blocks dropped, as at inference), and the target is the next step's pooled row over the same
columns. The loss is the mean squared error, as in the paper. The CNN's receptive field is 5
columns wide, so training on column crops (with 2 columns of real context on each side, not in
the loss) gives the same gradients as whole rows at a fraction of the cost.

  /usr/bin/python3 predictor/training/train.py \
      --train doc1.trace.safetensors,doc2.trace.safetensors \
      --heldout doc3.trace.safetensors \
      --init predictor/weights/foresight-smollm2.safetensors \
      --out trained.safetensors

Held-out documents are never trained on; the script prints the held-out loss of the initial and
the trained weights. Attention recovery, the metric that matters, comes from
`foresight predictor eval --weights trained.safetensors --trace <held-out traces>`.
"""

import argparse
import json
import math
import random
import struct
import sys
import time

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:  # the self-check reports a skip (77) rather than a failure without torch
    if "--check-vectors" in sys.argv:
        print("torch is not installed for this python (use /usr/bin/python3 with python3-torch)")
        sys.exit(77)
    raise

HISTORY_ROWS = 64
CONTEXT = 2  # columns of receptive-field context on each side of a crop

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """Returns (tensors: name -> np.ndarray, metadata: dict) without the safetensors package."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = data[begin:end].view(DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, meta


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


class AttentionPredictorCnn(nn.Module):
    """The published network: two 3x3 convolutions, a mean over time, a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv1d(32, 1, 1)

    def forward(self, x):  # x: [N, 64, L] -> [N, L]
        a = torch.relu(self.conv1(x.unsqueeze(1)))
        a = torch.relu(self.conv2(a))
        return self.conv3(a.mean(dim=2)).squeeze(1)


def load_weights(model, path):
    tensors, _ = read_safetensors(path)
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items()}
    model.load_state_dict(state)


def save_weights(model, path, description):
    tensors = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    write_safetensors(path, tensors, {"description": description, "format": "pt"})


class TraceSamples:
    """(history image, next row) pairs of one trace, built lazily per (layer, head, step)."""

    def __init__(self, path, sink_tokens, local_tokens, per_kv_head=False):
        tensors, meta = read_safetensors(path)
        if meta.get("format") != "foresight-trace":
            sys.exit(f"{path}: not a foresight trace (see docs/trace-format.md)")
        self.path = path
        self.layers = int(meta["layers"])
        self.q_heads = int(meta["q_heads"])
        self.block = int(meta["block_tokens"])
        self.prompt = int(meta["prompt_tokens"])
        self.steps = int(meta["decode_steps"])
        self.sink_blocks = -(-sink_tokens // self.block)
        self.local = local_tokens
        self.rows = []  # per layer: [q_heads, R + S, Bmax] dense block-max rows, oldest first
        for l in range(self.layers):
            pre = tensors[f"layer{l}.prefill.block_max"]  # [q, R, Bp]
            dec = tensors[f"layer{l}.decode.block_max"]  # [S, q, Bmax]
            bmax = dec.shape[2]
            pre = np.pad(pre, ((0, 0), (0, 0), (0, bmax - pre.shape[2])))
            rows = np.concatenate([pre, dec.transpose(1, 0, 2)], axis=1).astype(np.float32)
            if per_kv_head:  # as served: one history per KV head, the max over its query heads
                kv = int(meta["kv_heads"])
                rows = rows.reshape(kv, self.q_heads // kv, *rows.shape[1:]).max(axis=1)
            self.rows.append(rows)
        if per_kv_head:
            self.q_heads = int(meta["kv_heads"])  # the predicted heads
        self.prefill_rows = tensors["layer0.prefill.block_max"].shape[1]

    def window_end(self, key_tokens):
        """First local block for a step attending key_tokens keys (predictor/selection_budget.h)."""
        blocks = -(-key_tokens // self.block)
        first_local = min(max(0, key_tokens - self.local) // self.block, blocks - 1)
        return max(self.sink_blocks, first_local)

    def targets(self):
        """(layer, head, s): predict decode step s from the history ending at step s - 1."""
        return [(l, h, s) for l in range(self.layers) for h in range(self.q_heads) for s in range(self.steps)]

    def sample(self, layer, head, step, crop, rng):
        rows = self.rows[layer][head]
        newest = self.prefill_rows + step  # index of the target row; history is the 64 before it
        first = newest - HISTORY_ROWS
        image = rows[max(0, first):newest]
        if first < 0:
            image = np.concatenate([np.zeros((-first, rows.shape[1]), np.float32), image])
        begin, end = self.sink_blocks, self.window_end(self.prompt + step + 1)
        if end - begin < 3:
            return None
        lo, hi = begin, end
        if crop and end - begin > crop:
            lo = rng.randrange(begin, end - crop + 1)
            hi = lo + crop
        # Context columns feed the receptive field but are not in the loss, except at the window's
        # real edges, where inference pads with zeros too.
        ctx_lo, ctx_hi = max(begin, lo - CONTEXT), min(end, hi + CONTEXT)
        x = image[:, ctx_lo:ctx_hi]
        y = rows[newest, ctx_lo:ctx_hi]
        mask = np.zeros(ctx_hi - ctx_lo, np.float32)
        mask[lo - ctx_lo:hi - ctx_lo] = 1.0
        return x, y, mask


def batches(traces, crop, batch_size, rng, limit=None, shuffle=True):
    items = [(t, *key) for t in traces for key in t.targets()]
    if shuffle:
        rng.shuffle(items)
    if limit:
        items = items[:limit]
    # Group by width so a batch is one tensor.
    pending = {}
    for t, l, h, s in items:
        got = t.sample(l, h, s, crop, rng)
        if got is None:
            continue
        width = got[0].shape[1]
        group = pending.setdefault(width, [])
        group.append(got)
        if len(group) == batch_size:
            yield stack(group)
            pending[width] = []
    for group in pending.values():
        if group:
            yield stack(group)


def stack(group):
    x = torch.from_numpy(np.stack([g[0] for g in group]))
    y = torch.from_numpy(np.stack([g[1] for g in group]))
    m = torch.from_numpy(np.stack([g[2] for g in group]))
    return x, y, m


def masked_mse(pred, y, m):
    return ((pred - y) ** 2 * m).sum() / m.sum().clamp(min=1.0)


def evaluate(model, traces, crop, batch_size, limit):
    if not traces:
        return float("nan")
    rng = random.Random(1234)  # the same held-out samples for every evaluation
    total, count = 0.0, 0.0
    with torch.no_grad():
        for x, y, m in batches(traces, crop, batch_size, rng, limit=limit):
            total += float(((model(x) - y) ** 2 * m).sum())
            count += float(m.sum())
    return total / max(count, 1.0)


def check_vectors(weights_path, vectors_path, suffix):
    """The PyTorch model against the published test vectors; exit status 1 above 1e-5."""
    model = AttentionPredictorCnn()
    load_weights(model, weights_path)
    tensors, _ = read_safetensors(vectors_path)
    worst = 0.0
    for name in sorted(tensors):
        if not name.endswith(".input"):
            continue
        prefix = name[: -len(".input")]
        with torch.no_grad():
            got = model(torch.from_numpy(np.array(tensors[name], dtype=np.float32))).double().numpy()
        want = np.array(tensors[f"{prefix}.{suffix}"], dtype=np.float64)
        rel = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
        worst = max(worst, rel)
        print(f"{prefix}: relative error {rel:.3g}")
    return 0 if worst < 1e-5 else 1


def main():
    if "--check-vectors" in sys.argv:
        c = argparse.ArgumentParser()
        c.add_argument("--check-vectors", required=True, help="vectors.safetensors")
        c.add_argument("--weights", required=True)
        c.add_argument("--suffix", required=True, help="expected-output suffix, e.g. llama3.1")
        a = c.parse_args()
        sys.exit(check_vectors(a.weights, a.check_vectors, a.suffix))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="training traces, comma-separated")
    p.add_argument("--heldout", default="", help="held-out traces (other documents), comma-separated")
    p.add_argument("--init", default="", help="start from these weights (published layout); default random")
    p.add_argument("--out", required=True, help="where to write the trained weights (safetensors)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--crop", type=int, default=128, help="column crop width (0: whole rows)")
    p.add_argument("--samples-per-epoch", type=int, default=20000, help="0: every sample")
    p.add_argument("--heldout-samples", type=int, default=5000)
    p.add_argument("--sink", type=int, default=64)
    p.add_argument("--local", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-kv-head", action="store_true",
                   help="train on one history per KV head (the max over its query heads), as the served predictor runs")
    a = p.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    train = [TraceSamples(path, a.sink, a.local, a.per_kv_head) for path in a.train.split(",") if path]
    heldout = [TraceSamples(path, a.sink, a.local, a.per_kv_head) for path in a.heldout.split(",") if path]
    overlap = {t.path for t in train} & {t.path for t in heldout}
    if overlap:
        sys.exit(f"held-out traces also in the training set: {sorted(overlap)}")

    model = AttentionPredictorCnn()
    if a.init:
        load_weights(model, a.init)
    before = evaluate(model, heldout, a.crop, a.batch, a.heldout_samples)
    print(f"held-out MSE before training: {before:.6g}", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    for epoch in range(a.epochs):
        start, total, n = time.time(), 0.0, 0
        for x, y, m in batches(train, a.crop, a.batch, rng, limit=a.samples_per_epoch or None):
            opt.zero_grad()
            loss = masked_mse(model(x), y, m)
            loss.backward()
            opt.step()
            total += float(loss)
            n += 1
        held = evaluate(model, heldout, a.crop, a.batch, a.heldout_samples)
        print(f"epoch {epoch + 1}: train MSE {total / max(n, 1):.6g}, held-out MSE {held:.6g} "
              f"({time.time() - start:.0f} s)", flush=True)
    description = (f"trained by predictor/training/train.py on {a.train}; init {a.init or 'random'}; "
                   f"epochs {a.epochs}, lr {a.lr}, crop {a.crop}, per KV head {a.per_kv_head}, seed {a.seed}")
    save_weights(model, a.out, description)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
