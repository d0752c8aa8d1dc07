#!/usr/bin/env python3
"""Compares the --json files of two training runs: every epoch's (or
evaluation's) numeric FIELDS must agree within a relative tolerance.

    compare_runs.py A.json B.json ARRAY FIELD[,FIELD...] REL

Used by ctest: a data-parallel run under mpirun against one process with the
same global batch (float32 wire: equal up to float32 summation order).
Exit 0 if they agree, 1 with the differences otherwise.
"""
import json
import sys


def main(argv):
    if len(argv) != 6:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    a, b = (json.load(open(path)) for path in argv[1:3])
    array, fields, rel = argv[3], argv[4].split(","), float(argv[5])
    rows_a, rows_b = a[array], b[array]
    if len(rows_a) != len(rows_b):
        print(f"{array}: {len(rows_a)} entries vs {len(rows_b)}", file=sys.stderr)
        return 1
    bad = 0
    for i, (x, y) in enumerate(zip(rows_a, rows_b)):
        for f in fields:
            u, v = x[f], y[f]
            if abs(u - v) > rel * max(abs(u), abs(v), 1e-30):
                print(f"{array}[{i}].{f}: {u} vs {v}", file=sys.stderr)
                bad += 1
            else:
                print(f"{array}[{i}].{f}: {u} vs {v}: within {rel:g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
