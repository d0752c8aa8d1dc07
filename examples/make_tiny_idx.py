#!/usr/bin/env python3
"""Writes a tiny Fashion-MNIST-shaped IDX dataset (28x28 unsigned bytes, 10
classes) for the training example's smoke test when the real one is not
installed: train-{images,labels} (N images) and t10k-{images,labels} (N/4).
Each class lights every tenth pixel from its own offset, plus noise, so an
MLP learns it in an epoch.

    make_tiny_idx.py DIR [N]
"""
import os
import random
import struct
import sys


def write(directory, prefix, n, rng):
    labels = [rng.randrange(10) for _ in range(n)]
    with open(os.path.join(directory, prefix + "-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28))
        for label in labels:
            f.write(bytes(min(255, max(0, (200 if i % 10 == label else 30) + rng.randint(-60, 60)))
                          for i in range(784)))
    with open(os.path.join(directory, prefix + "-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n))
        f.write(bytes(labels))


def main():
    directory = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(1)
    write(directory, "train", n, rng)
    write(directory, "t10k", max(1, n // 4), rng)


if __name__ == "__main__":
    main()
