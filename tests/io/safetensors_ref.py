#!/usr/bin/env python3
"""Independent numpy reference writer/reader for safetensors files.

Used by ctest to cross-check scalify's C++ safetensors reader and writer.
It needs only python3 and numpy; every dtype (BF16 and the three float8
formats included) is decoded here from its bits with explicit formulas.

Usage:
  safetensors_ref.py write DIR
      Write DIR/numpy_written.safetensors (header padded so that 8 + N is a
      multiple of 8, tensors aligned to their item size),
      DIR/numpy_unaligned.safetensors (same content, 8 + N odd) and
      DIR/numpy_written.expected (decoded values of both).
  safetensors_ref.py read FILE EXPECTED [--allow-unaligned]
      Parse FILE strictly and compare it with the EXPECTED text file.
      Alignment ((8 + N) % 8 == 0, begin % itemsize == 0) is checked last.
  safetensors_ref.py selftest DIR
      Write, read back, and check that corrupted copies are rejected.

Expected text format: '#' comment lines; "meta <key> <value...>";
"tensor <name> <dtype> <ndim> <d0> ..." followed by one line holding the
prod(shape) values as float.hex() strings or nan / inf / -inf.
Exit code 0 on success; 1 with a message on stderr on any failure.
"""
import argparse
import json
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np

# dtype name -> (item size, little-endian numpy storage dtype of the raw bits)
DTYPES = {
    "F64": (8, "<f8"), "F32": (4, "<f4"), "F16": (2, "<f2"), "BF16": (2, "<u2"),
    "F8_E4M3": (1, "u1"), "F8_E5M2": (1, "u1"), "F8_E8M0": (1, "u1"),
    "I64": (8, "<i8"), "I32": (4, "<i4"), "I16": (2, "<i2"), "I8": (1, "i1"),
    "U64": (8, "<u8"), "U32": (4, "<u4"), "U16": (2, "<u2"), "U8": (1, "u1"),
    "BOOL": (1, "u1"),
}
DIM_RE = re.compile(r"[0-9]+")
VALUE_RE = re.compile(r"-?0x[0-9a-fA-F]+(\.[0-9a-fA-F]*)?p[+-]?[0-9]+|nan|inf|-inf")


class CheckError(Exception):
    """A file or expected-file check failed."""


# ---------------------------------------------------------------- decoding
def decode_e4m3(codes):
    c = codes.astype(np.int64)
    sign = np.where(c & 0x80, -1.0, 1.0)
    exp, man = (c >> 3) & 0xF, (c & 0x7).astype(np.float64)
    mag = np.where(exp == 0, np.ldexp(man / 8.0, -6), np.ldexp(1.0 + man / 8.0, exp - 7))
    return sign * np.where((exp == 15) & (man == 7), np.nan, mag)


def decode_e5m2(codes):
    c = codes.astype(np.int64)
    sign = np.where(c & 0x80, -1.0, 1.0)
    exp, man = (c >> 2) & 0x1F, (c & 0x3).astype(np.float64)
    mag = np.where(exp == 0, np.ldexp(man / 4.0, -14), np.ldexp(1.0 + man / 4.0, exp - 15))
    mag = np.where(exp == 31, np.where(man == 0, np.inf, np.nan), mag)
    return sign * mag


def decode_e8m0(codes):
    c = codes.astype(np.int64)
    return np.where(c == 0xFF, np.nan, np.ldexp(1.0, c - 127))


def decode(dtype, raw):
    """Decode little-endian raw bytes of `dtype` into a flat float64 array."""
    bits = np.frombuffer(raw, dtype=DTYPES[dtype][1])
    if dtype == "BF16":
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    special = {"F8_E4M3": decode_e4m3, "F8_E5M2": decode_e5m2, "F8_E8M0": decode_e8m0}
    if dtype in special:
        return special[dtype](bits)
    return bits.astype(np.float64)


def format_value(x):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x).hex()


def same_value(a, b):
    """Bitwise-meaningful equality: NaN == NaN, +0 != -0."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


# ---------------------------------------------------------------- expected text
def format_expected(metadata, tensors):
    lines = ["# written by safetensors_ref.py"]
    lines += [f"meta {k} {v}" for k, v in metadata.items()]
    for name, (dtype, shape, values) in sorted(tensors.items()):
        lines.append(" ".join(["tensor", name, dtype, str(len(shape))] + [str(d) for d in shape]))
        lines.append(" ".join(format_value(v) for v in values))
    return "\n".join(lines) + "\n"


def parse_value(token, where):
    if not VALUE_RE.fullmatch(token):
        raise CheckError(f"{where}: bad value token {token!r} (want float.hex, nan, inf, -inf)")
    return float.fromhex(token) if "x" in token else float(token)


def parse_tensor_line(parts, where):
    if len(parts) < 4 or not DIM_RE.fullmatch(parts[3]):
        raise CheckError(f"{where}: malformed tensor line")
    ndim = int(parts[3])
    if len(parts) != 4 + ndim or not all(DIM_RE.fullmatch(p) for p in parts[4:]):
        raise CheckError(f"{where}: tensor line needs exactly {ndim} non-negative dims")
    return parts[1], parts[2], [int(p) for p in parts[4:]]


def parse_expected(text):
    """Return (metadata dict, {name: (dtype, shape, list of float)})."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    metadata, tensors, i = {}, {}, 0
    while i < len(lines):
        line, where = lines[i], f"expected line {i + 1}"
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("meta "):
            parts = line.split(" ", 2)
            if len(parts) < 2 or not parts[1] or parts[1] in metadata:
                raise CheckError(f"{where}: malformed or duplicate meta line")
            metadata[parts[1]] = parts[2] if len(parts) == 3 else ""
        elif line.startswith("tensor "):
            name, dtype, shape = parse_tensor_line(line.split(" "), where)
            if name in tensors:
                raise CheckError(f"{where}: duplicate tensor {name!r}")
            if i >= len(lines):
                raise CheckError(f"{where}: missing values line for {name!r}")
            values = [parse_value(t, f"expected line {i + 1}") for t in lines[i].split()]
            i += 1
            if len(values) != math.prod(shape):
                raise CheckError(f"{where}: {name!r} has {len(values)} values, "
                                 f"shape wants {math.prod(shape)}")
            tensors[name] = (dtype, shape, values)
        else:
            raise CheckError(f"{where}: unrecognised line {line[:40]!r}")
    return metadata, tensors


# ---------------------------------------------------------------- file reading
def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise CheckError("header: duplicate JSON key")
    return dict(pairs)


def reject_constant(name):
    raise CheckError(f"header: non-JSON constant {name}")


def is_int(x):
    return type(x) is int and x >= 0


def check_entry(name, entry, buffer_len):
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CheckError(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(is_int(d) for d in shape):
        raise CheckError(f"tensor {name!r}: shape must be a list of non-negative ints")
    if not isinstance(offs, list) or len(offs) != 2 or not all(is_int(o) for o in offs):
        raise CheckError(f"tensor {name!r}: data_offsets must be two non-negative ints")
    begin, end = offs
    if begin > end or end > buffer_len:
        raise CheckError(f"tensor {name!r}: data_offsets {offs} invalid for a {buffer_len}-byte buffer")
    if end - begin != math.prod(shape) * DTYPES[dtype][0]:
        raise CheckError(f"tensor {name!r}: {end - begin} bytes but {dtype}{shape} needs "
                         f"{math.prod(shape) * DTYPES[dtype][0]}")
    return {"dtype": dtype, "shape": shape, "begin": begin, "end": end}


def check_coverage(tensors, buffer_len):
    pos = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1]["begin"], kv[1]["end"])):
        if t["begin"] != pos:
            kind = "gap" if t["begin"] > pos else "overlap"
            raise CheckError(f"data buffer: {kind} at byte {min(pos, t['begin'])} before tensor {name!r}")
        pos = t["end"]
    if pos != buffer_len:
        raise CheckError(f"data buffer: tensors cover {pos} bytes, buffer has {buffer_len}")


def parse_safetensors(data):
    """Strictly parse file bytes; return (header_len, metadata, tensors with 'raw')."""
    if len(data) < 8:
        raise CheckError(f"file is {len(data)} bytes, shorter than the 8-byte length prefix")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckError(f"header length {n} exceeds file size - 8 = {len(data) - 8}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates,
                            parse_constant=reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckError(f"header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise CheckError("header JSON is not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckError("__metadata__ must be an object of string -> string")
    buffer = data[8 + n:]
    tensors = {name: check_entry(name, e, len(buffer)) for name, e in header.items()}
    check_coverage(tensors, len(buffer))
    for t in tensors.values():
        t["raw"] = buffer[t["begin"]:t["end"]]
    return n, metadata, tensors


def compare(metadata, tensors, exp_meta, exp_tensors):
    for key, value in exp_meta.items():
        if metadata.get(key) != value:
            got = metadata.get(key, "<missing>")
            raise CheckError(f"metadata {key!r}: file has {got!r}, expected {value!r}")
    if set(tensors) != set(exp_tensors):
        raise CheckError(f"tensor names differ: only in file {sorted(set(tensors) - set(exp_tensors))}, "
                         f"only expected {sorted(set(exp_tensors) - set(tensors))}")
    for name, (dtype, shape, values) in sorted(exp_tensors.items()):
        t = tensors[name]
        if (t["dtype"], t["shape"]) != (dtype, shape):
            raise CheckError(f"tensor {name!r}: file {t['dtype']}{t['shape']}, expected {dtype}{shape}")
        for i, (got, want) in enumerate(zip(decode(dtype, t["raw"]).tolist(), values)):
            if not same_value(got, want):
                raise CheckError(f"tensor {name!r} value {i}: file {format_value(got)}, "
                                 f"expected {format_value(want)}")


def check_alignment(header_len, tensors):
    problems = [f"8 + header length {header_len} is not a multiple of 8"] if (8 + header_len) % 8 else []
    bad = [n for n, t in sorted(tensors.items()) if t["begin"] % DTYPES[t["dtype"]][0]]
    problems += [f"begin offset not a multiple of item size for {bad}"] if bad else []
    if problems:
        raise CheckError("alignment: " + "; ".join(problems))


def read_and_check(file_path, expected_path, allow_unaligned=False):
    n, metadata, tensors = parse_safetensors(Path(file_path).read_bytes())
    exp_meta, exp_tensors = parse_expected(Path(expected_path).read_text(encoding="utf-8"))
    compare(metadata, tensors, exp_meta, exp_tensors)
    if not allow_unaligned:
        check_alignment(n, tensors)
    count = sum(math.prod(t["shape"]) for t in tensors.values())
    return f"ok: {len(tensors)} tensors, {count} values"


# ---------------------------------------------------------------- writing
def make_tensors():
    """Return {name: (dtype, shape, raw little-endian bytes)}, deterministic."""
    rng = np.random.default_rng(20261203)
    codes = np.arange(256)
    e4m3_ok = codes[(codes & 0x7F) != 0x7F]
    e5m2_ok = codes[((codes >> 2) & 0x1F) != 31]
    h16 = (rng.standard_normal(24) * 100).astype("<f2")
    h16[:2] = [np.inf, -0.0]
    h16[2:4] = np.array([0x0003, 0x8200], dtype="<u2").view("<f2")  # subnormals 3*2^-24, -2^-15
    b16 = (rng.standard_normal(15).astype("<f4").view("<u4") >> 16).astype("<u2")
    arrays = {
        "all_e4m3": ("F8_E4M3", [16, 16], codes), "all_e5m2": ("F8_E5M2", [256], codes),
        "all_e8m0": ("F8_E8M0", [2, 128], codes),
        "w8": ("F8_E4M3", [7, 5], rng.choice(e4m3_ok, 35)), "w8_scale": ("F32", [], [0.0078125]),
        "g8": ("F8_E5M2", [3, 4], rng.choice(e5m2_ok, 12)), "g8_scale": ("F32", [1], [3.0517578125e-05]),
        "h16": ("F16", [4, 6], h16), "b16": ("BF16", [5, 3], b16),
        "f32": ("F32", [2, 3, 4], rng.standard_normal(24)), "vec": ("F32", [6], rng.standard_normal(6)),
        "scalar": ("F32", [], rng.standard_normal(1)), "one": ("F16", [1, 1], rng.standard_normal(1)),
        "empty": ("F32", [0, 5], []), "empty1": ("F8_E4M3", [0], []),
        "f64": ("F64", [2, 2], [*rng.standard_normal(2), 5e-324, -1.5e300]),
        "ids": ("I64", [5], rng.integers(-1000, 1000, 5)),
        "e8_scale_user": ("F8_E4M3", [2, 2], rng.choice(e4m3_ok, 4)),
        "e8_scale_user_scale": ("F8_E8M0", [], [120]),
    }
    return {name: (dt, shape, np.asarray(vals).astype(DTYPES[dt][1]).tobytes())
            for name, (dt, shape, vals) in arrays.items()}


def shuffled_keys(names, layout):
    """Deterministic key order that is neither sorted nor the layout order."""
    rng = np.random.default_rng(7)
    while True:
        keys = [names[i] for i in rng.permutation(len(names))]
        if keys != sorted(names) and keys != layout:
            return keys[:len(keys) // 2] + ["__metadata__"] + keys[len(keys) // 2:]


def build_file(header, buffer, align):
    """Serialise header dict + buffer; align=True pads 8+N to 8, else makes 8+N odd."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    pad = (-len(text)) % 8 if align else (1 - len(text) % 2)
    text += b" " * pad
    return struct.pack("<Q", len(text)) + text + buffer


def write_reference(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = make_tensors()
    metadata = {"format": "pt", "written_by": "numpy reference"}
    layout = sorted(tensors, key=lambda n: (-DTYPES[tensors[n][0]][0], n))
    entries, chunks, pos = {}, [], 0
    for name in layout:
        dtype, shape, raw = tensors[name]
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    header = {k: metadata if k == "__metadata__" else entries[k]
              for k in shuffled_keys(list(tensors), layout)}
    buffer = b"".join(chunks)
    (out / "numpy_written.safetensors").write_bytes(build_file(header, buffer, True))
    (out / "numpy_unaligned.safetensors").write_bytes(build_file(header, buffer, False))
    decoded = {n: (dt, shape, decode(dt, raw).tolist()) for n, (dt, shape, raw) in tensors.items()}
    (out / "numpy_written.expected").write_text(format_expected(metadata, decoded), encoding="utf-8")


# ---------------------------------------------------------------- selftest
def spot_check_decoders():
    cases = [("F8_E4M3", 0x7E, 448.0), ("F8_E4M3", 0x01, 2.0 ** -9), ("F8_E4M3", 0xB8, -1.0),
             ("F8_E4M3", 0x80, -0.0), ("F8_E4M3", 0x7F, math.nan), ("F8_E5M2", 0x7B, 57344.0),
             ("F8_E5M2", 0x01, 2.0 ** -16), ("F8_E5M2", 0xFC, -math.inf), ("F8_E5M2", 0x7D, math.nan),
             ("F8_E8M0", 127, 1.0), ("F8_E8M0", 0, 2.0 ** -127), ("F8_E8M0", 0xFF, math.nan),
             ("BF16", 0x3F80, 1.0), ("BF16", 0xC040, -3.0)]
    for dtype, code, want in cases:
        got = decode(dtype, np.array([code], DTYPES[dtype][1]).tobytes())[0]
        if not same_value(got, want):
            raise CheckError(f"decoder {dtype} code {code:#x}: got {got}, want {want}")
    codes = np.arange(256, dtype="<u2")  # E5M2 is the top byte of an IEEE half
    via_half = (codes << 8).view("<f2").astype(np.float64)
    if not all(map(same_value, decode_e5m2(codes), via_half)):
        raise CheckError("decoder F8_E5M2 disagrees with float16 top-byte decoding")
    if not same_value(0.0, 0.0) or same_value(0.0, -0.0) or not same_value(math.nan, -math.nan):
        raise CheckError("same_value: zero sign or NaN handling is wrong")


def corrupted_copies(data):
    """Yield (label, bytes) of copies that the reader must reject."""
    (n,) = struct.unpack("<Q", data[:8])
    header, buffer = data[8:8 + n], data[8 + n:]
    entries = {k: v for k, v in json.loads(header).items() if k != "__metadata__"}
    last = max(entries, key=lambda k: entries[k]["data_offsets"][0])
    offs = entries[last]["data_offsets"]

    def edit(name, field, value, buf=buffer):
        changed = json.loads(header)
        changed[name][field] = value
        return build_file(changed, buf, True)

    yield "truncated by one byte", data[:-1]
    yield "truncated inside header", data[:8 + n // 2]
    yield "header length too large", struct.pack("<Q", len(data)) + data[8:]
    yield "bad JSON", data[:8] + header.replace(b"}", b" ", 1) + buffer
    yield "invalid UTF-8", data[:9] + b"\xff" + data[10:]
    yield "gap between tensors", edit(last, "data_offsets", [o + 8 for o in offs], buffer + bytes(8))
    yield "overlapping tensors", edit(last, "data_offsets", [o - 1 for o in offs], buffer[:-1])
    yield "wrong dtype size", edit("f32", "dtype", "F16")
    yield "unknown dtype", edit("vec", "dtype", "F48")
    yield "float in shape", edit("vec", "shape", [6.0])
    yield "extra entry key", edit("vec", "extra", 1)
    flipped = bytearray(data)
    flipped[8 + n + entries["f32"]["data_offsets"][0] + 3] ^= 0x80  # sign bit -> value mismatch
    yield "value mismatch", bytes(flipped)


def selftest(out_dir):
    out = Path(out_dir)
    spot_check_decoders()
    write_reference(out)
    good, expected = out / "numpy_written.safetensors", out / "numpy_written.expected"
    print(f"aligned file: {read_and_check(good, expected)}")
    print(f"unaligned file (alignment not checked): "
          f"{read_and_check(out / 'numpy_unaligned.safetensors', expected, allow_unaligned=True)}")
    try:
        read_and_check(out / "numpy_unaligned.safetensors", expected)
        raise CheckError("unaligned file was accepted with the alignment check on")
    except CheckError as e:
        if not str(e).startswith("alignment:"):
            raise
    bad_path = out / "corrupted.safetensors"
    for label, data in corrupted_copies(good.read_bytes()):
        bad_path.write_bytes(data)
        try:
            read_and_check(bad_path, expected)
        except CheckError as e:
            print(f"rejected {label}: {e}")
            continue
        raise CheckError(f"corrupted copy accepted: {label}")
    bad_path.unlink()
    return "selftest ok"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write").add_argument("dir")
    rd = sub.add_parser("read")
    rd.add_argument("file")
    rd.add_argument("expected")
    rd.add_argument("--allow-unaligned", action="store_true", help="skip the alignment checks")
    sub.add_parser("selftest").add_argument("dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            write_reference(args.dir)
            print(f"wrote numpy_written.safetensors, numpy_unaligned.safetensors, "
                  f"numpy_written.expected in {args.dir}")
        elif args.command == "read":
            print(read_and_check(args.file, args.expected, args.allow_unaligned))
        else:
            print(selftest(args.dir))
    except (CheckError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
