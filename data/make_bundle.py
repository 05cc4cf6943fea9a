#!/usr/bin/env python3
"""Write the small dataset bundle that ships with qforget (standard library only).

    python3 data/make_bundle.py [--src /work/shared/data] [--out data] [--check]

For MNIST and Fashion-MNIST, from the original idx files (gzip):
  train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz : the FIRST 10,000 training examples, in
      the original order, re-written with a proper idx header (count 10000), gzip level 9, mtime 0
      and no file name in the gzip header, so the output is byte-for-byte reproducible;
  t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz : the full 10,000-image test set, copied
      as-is (same bytes as the original download).
The source files are checked against <src>/SHA256SUMS first. The sha256 of every output file is
printed, and --check compares them with the table in data/README.md instead of only printing.
"""

import argparse
import gzip
import hashlib
import io
import shutil
import struct
import sys
from pathlib import Path

DATASETS = ("fashion-mnist", "mnist")
N_TRAIN = 10000


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sources(src):
    sums = {}
    for line in (src / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name] = digest
    for ds in DATASETS:
        for f in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
            name = f"{ds}/{f}-ubyte.gz"
            if name not in sums:
                sys.exit(f"{name} is not listed in {src / 'SHA256SUMS'}")
            got = sha256(src / name)
            if got != sums[name]:
                sys.exit(f"sha256 mismatch for {src / name}: {got}, expected {sums[name]}")


def read_idx(path):
    """(magic, dims, payload bytes) of a gzipped idx file of unsigned bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"{path}: not an unsigned-byte idx file")
    dims = list(struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim]))
    payload = data[4 + 4 * ndim :]
    size = 1
    for d in dims:
        size *= d
    if len(payload) != size:
        sys.exit(f"{path}: payload has {len(payload)} bytes, header says {size}")
    return data[:4], dims, payload


def write_idx_gz(path, magic, dims, payload):
    raw = magic + struct.pack(">" + "I" * len(dims), *dims) + payload
    buf = io.BytesIO()
    # filename="" and mtime=0: nothing in the gzip header depends on when or where it was written
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(raw)
    path.write_bytes(buf.getvalue())


def make(src, out):
    verify_sources(src)
    written = []
    for ds in DATASETS:
        (out / ds).mkdir(parents=True, exist_ok=True)
        for kind in ("images-idx3", "labels-idx1"):
            magic, dims, payload = read_idx(src / ds / f"train-{kind}-ubyte.gz")
            per_item = len(payload) // dims[0]
            dims = [N_TRAIN] + dims[1:]
            dst = out / ds / f"train-{kind}-ubyte.gz"
            write_idx_gz(dst, magic, dims, payload[: N_TRAIN * per_item])
            written.append(dst)
            dst = out / ds / f"t10k-{kind}-ubyte.gz"
            shutil.copyfile(src / ds / f"t10k-{kind}-ubyte.gz", dst)
            written.append(dst)
    # read back what was written: headers, counts, and the train subset equals the source prefix
    for ds in DATASETS:
        for split, n in (("train", N_TRAIN), ("t10k", 10000)):
            _, di, pi = read_idx(out / ds / f"{split}-images-idx3-ubyte.gz")
            _, dl, pl = read_idx(out / ds / f"{split}-labels-idx1-ubyte.gz")
            assert di == [n, 28, 28] and dl == [n], (ds, split, di, dl)
            assert max(pl) <= 9
        _, _, full = read_idx(src / ds / "train-images-idx3-ubyte.gz")
        _, _, sub = read_idx(out / ds / "train-images-idx3-ubyte.gz")
        assert full[: len(sub)] == sub
    return written


def main():
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default="/work/shared/data", help="folder with the original idx.gz files")
    ap.add_argument("--out", default=str(here), help="where to write (default: this folder)")
    ap.add_argument("--check", action="store_true", help="compare sha256 with data/README.md")
    args = ap.parse_args()
    out = Path(args.out)
    written = make(Path(args.src), out)
    readme = (here / "README.md").read_text() if (here / "README.md").exists() else ""
    bad = 0
    for p in written:
        rel = p.relative_to(out).as_posix()
        digest = sha256(p)
        line = f"| `{rel}` | {p.stat().st_size} | `{digest}` |"
        if args.check and line not in readme:
            print(f"MISMATCH {line}")
            bad += 1
        else:
            print(line)
    if bad:
        sys.exit(f"{bad} file(s) differ from data/README.md")


if __name__ == "__main__":
    main()
