#!/usr/bin/env python3
"""Concurrency stress against the multi-threaded daemon, with a checker.

Several processes at once: creates, writes, renames within and across
directories, unlinks, mkdir/rmdir and fsync in directories of their own;
writes, reads, truncates and fsyncs of shared files; readdir of a shared
directory while entries come and go.  Every block written to a shared file
describes itself (file, block number, writer, sequence), so a reader can
tell a whole block from a torn or misplaced one, and a block from another
file (freed blocks must never show through).  At the end each worker's own
namespace must be exactly what it did; the shared files must hold only
whole blocks or zeros; the daemon must unmount cleanly and fsck be clean.

PMFUSE_DAEMON may name another daemon binary: the ThreadSanitizer build
(daemon/pmfuse-tsan) runs the same test, and any race report fails it.
The harness watchdog turns a deadlock into a failure."""
import mmap
import multiprocessing
import os
import random
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import main  # noqa: E402

BLK = 4096
WORKERS = 4
SHARED = 3
SHARED_BLOCKS = 64
MAGIC = b"PMFSTRSS"
DURATION = float(os.environ.get("PMFUSE_STRESS_SECONDS", "8"))


def block(fileno, blockno, writer, seq):
    head = MAGIC + struct.pack("<IIII", fileno, blockno, writer, seq)
    body = (head * (BLK // len(head) + 1))[:BLK]
    return body


def check_block(data, fileno, blockno):
    """None if data is zeros or a whole block of (fileno, blockno); else why."""
    if data == bytes(len(data)):
        return None
    if len(data) != BLK or not data.startswith(MAGIC):
        return "torn or foreign bytes"
    f, b, w, s = struct.unpack("<IIII", data[8:24])
    if (f, b) != (fileno, blockno):
        return "block of file %d block %d found at file %d block %d" % (f, b, fileno, blockno)
    if data != block(f, b, w, s):
        return "torn block (writer %d seq %d)" % (w, s)
    return None


def worker(mnt, w, seed, result_q):
    rnd = random.Random(seed)
    mine = os.path.join(mnt, "w%d" % w)
    other = os.path.join(mnt, "w%d" % ((w + 1) % WORKERS))
    expect = {}             # name -> content, in my directory
    rbuf = mmap.mmap(-1, 8 * BLK)   # page-aligned, for O_DIRECT reads
    errors = []
    seq = 0
    n = 0
    deadline = time.monotonic() + DURATION
    while time.monotonic() < deadline and not errors:
        n += 1
        op = rnd.randrange(100)
        seq += 1
        try:
            if op < 20:                         # create + write (+ fsync)
                name = "f%d" % rnd.randrange(40)
                data = os.urandom(rnd.choice((10, 4096, 5000, 70000)))
                with open(os.path.join(mine, name), "wb") as f:
                    f.write(data)
                    if rnd.random() < 0.3:
                        os.fsync(f.fileno())
                expect[name] = data
            elif op < 30 and expect:            # rename within my directory
                a = rnd.choice(sorted(expect))
                b = "f%d" % rnd.randrange(40)
                os.rename(os.path.join(mine, a), os.path.join(mine, b))
                expect[b] = expect.pop(a)
            elif op < 38 and expect:            # across directories and back
                a = rnd.choice(sorted(expect))
                tmp = os.path.join(other, "visit-w%d-%s" % (w, a))
                os.rename(os.path.join(mine, a), tmp)
                os.rename(tmp, os.path.join(mine, a))
            elif op < 45 and expect:            # unlink
                a = rnd.choice(sorted(expect))
                os.unlink(os.path.join(mine, a))
                del expect[a]
            elif op < 50:                       # mkdir/rmdir
                d = os.path.join(mine, "dir%d" % rnd.randrange(3))
                try:
                    os.mkdir(d)
                except FileExistsError:
                    os.rmdir(d)
            elif op < 70:                       # shared: write whole blocks
                fno = rnd.randrange(SHARED)
                fd = os.open(os.path.join(mnt, "shared%d" % fno), os.O_WRONLY)
                try:
                    b0 = rnd.randrange(SHARED_BLOCKS)
                    cnt = rnd.randrange(1, 9)
                    data = b"".join(block(fno, b, w, seq) for b in range(b0, b0 + cnt))
                    os.pwrite(fd, data, b0 * BLK)
                    if rnd.random() < 0.2:
                        os.fdatasync(fd)
                finally:
                    os.close(fd)
            elif op < 85:                       # shared: read and check
                # O_DIRECT: the daemon answers it under the inode lock, so it
                # sees whole writes.  A buffered read may copy a cached page
                # while a buffered write is copying into it (Linux makes no
                # promise there, on any filesystem): that tear is the kernel's.
                fno = rnd.randrange(SHARED)
                b0 = rnd.randrange(SHARED_BLOCKS)
                fd = os.open(os.path.join(mnt, "shared%d" % fno), os.O_RDONLY | os.O_DIRECT)
                try:
                    n = os.preadv(fd, [rbuf], b0 * BLK)
                    data = bytes(rbuf[:n])
                finally:
                    os.close(fd)
                for i in range(0, len(data) - len(data) % BLK, BLK):
                    why = check_block(data[i:i + BLK], fno, b0 + i // BLK)
                    if why:
                        errors.append("shared%d block %d: %s" % (fno, b0 + i // BLK, why))
            elif op < 90:                       # shared: truncate
                fno = rnd.randrange(SHARED)
                os.truncate(os.path.join(mnt, "shared%d" % fno),
                            rnd.randrange(SHARED_BLOCKS + 1) * BLK)
            elif op < 95:                       # shared: fsync
                fd = os.open(os.path.join(mnt, "shared%d" % rnd.randrange(SHARED)), os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            else:                               # readdir of a changing directory
                names = os.listdir(other)
                if len(names) != len(set(names)):
                    errors.append("readdir of %s listed a name twice" % other)
        except OSError as e:
            errors.append("op %d: %s" % (op, e))
    result_q.put((w, n, errors, expect))


class StressTest(h.PmfuseTestCase):
    region_size = "256M"
    test_timeout = 240

    def test_concurrent_workers_leave_a_consistent_filesystem(self):
        for w in range(WORKERS):
            os.mkdir(self.p("w%d" % w))
        for f in range(SHARED):
            with open(self.p("shared%d" % f), "wb") as fh:
                fh.truncate(SHARED_BLOCKS * BLK)
        q = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=worker, args=(self.mnt, w, 1000 + w, q))
                 for w in range(WORKERS)]
        for p in procs:
            p.start()
        results = [q.get(timeout=DURATION + 120) for _ in procs]
        for p in procs:
            p.join(30)
        total = 0
        for w, n, errors, expect in sorted(results):
            total += n
            self.assertEqual(errors, [], "worker %d" % w)
            d = self.p("w%d" % w)
            files = {x for x in os.listdir(d) if not x.startswith("dir")}
            self.assertEqual(files, set(expect), "worker %d's directory" % w)
            for name, data in expect.items():
                self.assertEqual(h.read_file(os.path.join(d, name)), data, name)
        self.checkShared()
        sys.stderr.write("stress: %d operations by %d workers\n" % (total, WORKERS))
        # everything survives a remount byte for byte, and fsck is clean
        snapshot = {}
        for w, _, _, expect in results:
            for name, data in expect.items():
                snapshot[os.path.join("w%d" % w, name)] = data
        self.remount()
        for rel, data in snapshot.items():
            self.assertEqual(h.read_file(self.p(rel)), data, rel)
        self.checkShared()

    def checkShared(self):
        for f in range(SHARED):
            data = h.read_file(self.p("shared%d" % f))
            self.assertEqual(len(data) % BLK, 0)
            for i in range(0, len(data), BLK):
                why = check_block(data[i:i + BLK], f, i // BLK)
                self.assertIsNone(why, "shared%d block %d" % (f, i // BLK))


if __name__ == "__main__":
    main()
