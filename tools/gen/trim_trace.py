#!/usr/bin/env python3
"""Keeps some layers of a Foresight attention trace (docs/trace-format.md), renumbered from 0.

Used to make the small held-out trace the test suite replays with the shipped predictor weights
(predictor/weights/README.md): a whole SmolLM2 trace is tens of megabytes, two layers of a
1K-token one about a megabyte.

  python3 tools/gen/trim_trace.py --in full.trace.safetensors --layers 10,20 --out small.trace.safetensors

Standard library only (the format is 8 bytes of header length, a JSON header, raw data).
"""

import argparse
import json
import struct
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--layers", required=True, help="comma-separated layer indices to keep, in order")
    a = p.parse_args()

    with open(a.src, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data = f.read()
    meta = header.pop("__metadata__", {})
    if meta.get("format") != "foresight-trace":
        sys.exit(f"{a.src}: not a foresight trace")
    keep = [int(x) for x in a.layers.split(",")]
    layers = int(meta["layers"])
    if not keep or any(l < 0 or l >= layers for l in keep):
        sys.exit(f"--layers must name layers of 0..{layers - 1}")

    out_header, blobs, offset = {}, [], 0
    for new, old in enumerate(keep):
        prefix = f"layer{old}."
        for name in sorted(n for n in header if n.startswith(prefix)):
            info = header[name]
            begin, end = info["data_offsets"]
            out_header[f"layer{new}." + name[len(prefix):]] = {
                "dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + end - begin]}
            blobs.append(data[begin:end])
            offset += end - begin
    meta = dict(meta)
    meta["layers"] = str(len(keep))
    meta["trimmed_from_layers"] = a.layers
    out_header["__metadata__"] = meta
    encoded = json.dumps(out_header, separators=(",", ":")).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(a.out, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
    print(f"wrote {a.out}: layers {a.layers} of {layers}, {offset} bytes of tensors")


if __name__ == "__main__":
    main()
