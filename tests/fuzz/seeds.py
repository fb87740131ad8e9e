#!/usr/bin/env python3
"""Write structured seed inputs for fuzz_image (format: fuzz_image.c's header).

    python3 tests/fuzz/seeds.py OUTDIR

Each seed damages one field of one kind of object -- with boundary values,
small additions, or a pointer to another object -- usually with the fixup
bit set so it gets past checksums and name hashes.  Deterministic (fixed
random seed), so re-running writes the same files.  libFuzzer takes it from
there; the committed corpus is what survived `-merge=1` of a long run.
"""
import os
import random
import struct
import sys

# enum kind in fuzz_image.c
(K_POOLHDR, K_POOLDESC, K_SUPER, K_BACKUP, K_ITABLE, K_ICHUNK, K_INODE, K_DIRTAB,
 K_DIRCHUNK, K_DIRENT, K_NAME, K_XATTR, K_SYMLINK, K_MAPNODE, K_PIECES) = range(15)
PATCH_SET, PATCH_XOR, PATCH_ADD, PATCH_POINTER = range(4)

GEOMETRY = [(0, 8), (8, 4), (12, 4), (16, 16), (32, 64), (96, 8), (104, 8), (112, 8),
            (120, 8), (128, 8), (136, 4), (140, 4), (144, 8), (152, 8), (160, 8), (168, 8),
            (656, 8)]
INODE = [(0, 4), (4, 4), (16, 4), (20, 4), (24, 8), (32, 8), (40, 8), (112, 8), (120, 4),
         (128, 8), (136, 8), (144, 8), (152, 8), (160, 8), (168, 8), (176, 8)]
DIRENT = [(0, 8), (8, 8), (16, 2), (18, 1), (24, 8), (32, 8)]
FIELDS = {
    # libpmemobj 1.12 pool header: signature, major, features, uuids, crtime, arch
    K_POOLHDR: [(0, 8), (8, 4), (12, 4), (16, 4), (20, 4), (24, 16), (40, 16), (56, 16),
                (72, 16), (120, 8), (128, 8), (136, 8), (4024, 8)],
    # descriptor: layout, lanes_offset, nlanes, heap_offset, root_offset, run_id, root_size
    K_POOLDESC: [(0, 8), (1024, 8), (1032, 8), (1040, 8), (1048, 8), (2048, 8), (2056, 8),
                 (2064, 8)],
    # state, last_mount, mount_count, orphan_head, pieces_off, ichunk_hwm
    K_SUPER: GEOMETRY + [(664, 4), (672, 8), (680, 8), (688, 8), (696, 8), (704, 8)],
    K_BACKUP: GEOMETRY,
    K_ITABLE: [(0, 8), (8, 8), (16, 8)],
    K_ICHUNK: [(256 * i + o, n) for i in (0, 1, 5, 63) for o, n in INODE[:8]],
    K_INODE: INODE,
    K_DIRTAB: [(0, 8), (8, 8), (16, 8), (24, 8)],
    K_DIRCHUNK: [(64 * i + o, n) for i in (0, 1, 63) for o, n in DIRENT],
    K_DIRENT: DIRENT,
    K_NAME: [(0, 1), (5, 1), (31, 2)],
    K_XATTR: [(0, 4), (4, 4), (8, 2), (10, 2), (12, 4), (16, 4), (24, 8)],
    K_SYMLINK: [(0, 1), (40, 2), (80, 8)],
    # slots; byte 7 of a slot holds the unwritten flag of a leaf (bit 63)
    K_MAPNODE: [(0, 8), (8, 8), (16, 8), (24, 8), (504, 8), (7, 1), (15, 1)],
    # piece table: count, cap, then (obj, off, len, pad) per piece
    K_PIECES: [(0, 8), (8, 8), (16, 8), (24, 8), (32, 8)],
}
FIXABLE = {K_POOLHDR, K_POOLDESC, K_SUPER, K_BACKUP, K_DIRCHUNK, K_DIRENT, K_NAME}
BOUNDARY = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0x2000, 0xffff, 0x10000,
            0x7fffffff, 0x80000000, 0xffffffff, 0x1ffffff, 0x2000000, 1 << 40, 1 << 50,
            (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0x3145535546504d50]
DELTAS = [1, -1, 2, -2, 8, -8, 16, -16, 64, 128, 256, 4096, -4096, 1 << 21]


def record(kind, idx, how, fix, off, data):
    return bytes([kind, idx & 0xff, (0x80 if fix else 0) | (how << 5) | (len(data) - 1),
                  off & 0xff, (off >> 8) & 0xff]) + data


def variants(rng, kind, off, size):
    fix = kind in FIXABLE
    for _ in range(4):
        v = rng.choice(BOUNDARY) & ((1 << (8 * size)) - 1)
        yield record(kind, rng.randrange(16), PATCH_SET, fix, off, v.to_bytes(size, 'little'))
    for _ in range(2 if size >= 4 else 0):
        d = rng.choice(DELTAS)
        yield record(kind, rng.randrange(16), PATCH_ADD, fix, off, struct.pack('<q', d))
    if size == 8:
        target = rng.randrange(15)
        delta = rng.choice([0, 0, 16, -16, 8])
        yield record(kind, rng.randrange(16), PATCH_POINTER, fix, off,
                     bytes([target, rng.randrange(16)]) + struct.pack('<h', delta))
    yield record(kind, rng.randrange(16), PATCH_XOR, fix, off,
                 bytes([1 << rng.randrange(8)] + [0] * (size - 1)))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20240611)
    n = 0
    for kind, fields in FIELDS.items():
        for off, size in fields:
            for rec in variants(rng, kind, off, size):
                ops = rng.choice([0, 0, 0xff, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80])
                data = bytes([ops, rng.randrange(256)]) + rec
                if rng.random() < 0.2:	# a second, unrelated patch
                    k2 = rng.choice(list(FIELDS))
                    o2, s2 = rng.choice(FIELDS[k2])
                    data += next(variants(rng, k2, o2, s2))
                with open(os.path.join(out, 'seed-%04d' % n), 'wb') as f:
                    f.write(data)
                n += 1
    print('%d seeds in %s' % (n, out))


if __name__ == '__main__':
    main()
