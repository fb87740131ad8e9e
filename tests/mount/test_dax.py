"""
Direct access: libpmfuse-dax maps pmfuse files straight from the region
(include/pmfuse/dax.h, lib/dax.c, daemon/core/dax.c).

Real processes under LD_PRELOAD (Python's mmap module, a C program, LMDB)
map files on a live mount; the tests check the data byte for byte through
the map and through read(2), the counters that prove the mechanism ran
(dax_faults, dax_fault_allocs, dax_flush_bytes, dax_huge_maps), that holes
allocate nothing, that msync flushes only what was stored, that blocks a
map can still reach never go to another file, and durability after
kill -9 of both sides (MAP_SYNC at cache-line granularity).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
import unittest

from harness import (BUILD, PmfuseTestCase, dax_preload_env, fallocate, fs_stats, main,
                     pmfuse_only, wait_until)

DAXPROG = os.path.join(BUILD, "tests", "daxprog")
DAXPROG_LINKED = os.path.join(BUILD, "tests", "daxprog-linked")
SYS_PYTHON = "/usr/bin/python3"
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
MiB = 1 << 20
PAGE = 4096


preload_env = dax_preload_env


CHILD = r'''
import ctypes, hashlib, json, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
maps = {}

def direct(m, what="direct"):
    f = getattr(libc, "pmfuse_dax_is_" + what, None)
    if f is None:
        return 0
    f.argtypes = [ctypes.c_void_p]
    return f(address(m))

def address(m):
    if isinstance(m, RawMap):
        return m.addr
    c = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(c)
    finally:
        del c

class RawMap:
    """A read-only map through libc's mmap (Python's cannot give its address)."""
    def __init__(self, fd, length, off):
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        self.addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, off)
        if self.addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        self.length = length
    def __getitem__(self, sl):
        if isinstance(sl, int):
            return ctypes.string_at(self.addr + sl, 1)[0]
        return ctypes.string_at(self.addr + sl.start, sl.stop - sl.start)
    def flush(self):
        pass
    def close(self):
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.munmap(self.addr, self.length)

for line in sys.stdin:
    c = json.loads(line)
    op, r = c["op"], {"ok": True}
    try:
        m = maps.get(c.get("id"))
        if op == "map":
            write = c.get("write", True)
            fd = os.open(c["path"], os.O_RDWR if write else os.O_RDONLY)
            if c.get("write_only"):         # PROT_WRITE alone, as fio's mmap engine asks
                m = mmap.mmap(fd, c["len"], mmap.MAP_SHARED, mmap.PROT_WRITE,
                              offset=c.get("off", 0))
            elif write:
                m = mmap.mmap(fd, c["len"], mmap.MAP_SHARED, offset=c.get("off", 0))
            else:
                m = RawMap(fd, c["len"], c.get("off", 0))
            os.close(fd)                        # the map outlives the descriptor
            maps[c["id"]] = m
            r["direct"] = direct(m)
            r["tracked"] = direct(m, "tracked")
            r["addr"] = address(m)
        elif op == "fill":
            m[c["off"]:c["off"] + c["len"]] = bytes([c["byte"]]) * c["len"]
        elif op == "stores":                    # one byte at each offset
            for off in c["offs"]:
                m[off] = c["byte"]
        elif op == "read":
            r["hex"] = m[c["off"]:c["off"] + c["len"]].hex()
        elif op == "sha":
            r["sha"] = hashlib.sha256(m[c["off"]:c["off"] + c["len"]]).hexdigest()
        elif op == "touch":                     # load one byte of every page
            x = 0
            for off in range(c["off"], c["off"] + c["len"], 4096):
                x |= m[off]
            r["or"] = x
        elif op == "msync":
            if "len" in c:
                m.flush(c["off"], c["len"])
            else:
                m.flush()
        elif op == "resize":
            m.resize(c["len"])
            r["direct"] = direct(m)
        elif op == "unmap":
            maps.pop(c["id"]).close()
        elif op == "tracked":
            r["tracked"] = direct(m, "tracked")
        elif op == "unmap_part":                # munmap(2) of a part: the map is split
            libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            if libc.munmap(address(m) + c["off"], c["len"]):
                raise OSError(ctypes.get_errno(), "munmap")
        elif op == "exit":
            print(json.dumps(r), flush=True)
            break
    except Exception as e:
        r = {"ok": False, "err": repr(e), "errno": getattr(e, "errno", None)}
    print(json.dumps(r), flush=True)
'''


class Child:
    """A Python process under the library, holding maps, driven line by line."""

    def __init__(self, env=None, user=None):
        kw = {}
        if user is not None:
            kw = dict(user=user, group=user, extra_groups=[])
        # another user cannot run a Python built under /root
        python = SYS_PYTHON if user is not None else sys.executable
        self.p = subprocess.Popen([python, "-c", CHILD], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env or preload_env(), **kw)

    def __call__(self, op, **kw):
        kw["op"] = op
        self.p.stdin.write(json.dumps(kw) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            self.p.wait(10)
            raise AssertionError("child died (%s) at %s: %s" % (self.p.returncode, op,
                                                                self.p.stderr.read()[-2000:]))
        r = json.loads(line)
        if not r["ok"]:
            raise AssertionError("child %s failed: %s" % (op, r))
        return r

    def exit(self):
        self("exit")
        self.p.wait(10)
        err = self.p.stderr.read()
        self.p.stdin.close()
        self.p.stdout.close()
        self.p.stderr.close()
        return self.p.returncode, err

    def kill(self):
        self.p.kill()
        self.p.wait(10)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            f.close()


def dax(mnt):
    s = fs_stats(mnt)
    return {k: v for k, v in s.items() if k.startswith("dax_")} | {
        "flush_bytes": s["flush_bytes"], "blocks_free": s["blocks_free"]}


def make_file(path, data=None, size=None):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if data:
            os.pwrite(fd, data, 0)
        if size is not None:
            os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def fill_region(test, fd):
    """Write zeros through fd until the region is full (ENOSPC, at the write
    or -- with -o writeback_cache -- at the fsync that follows): the size
    written.  Never more than the region holds."""
    chunk = b"\0" * MiB
    off = 0
    limit = os.statvfs(test.mnt).f_blocks * PAGE
    try:
        while off < limit:
            os.pwrite(fd, chunk, off)
            off += MiB
            if off % (16 * MiB) == 0:
                os.fsync(fd)
        test.fail("the region took %d bytes, more than it has" % off)
    except OSError as e:
        test.assertEqual(e.errno, 28)
    try:
        os.fsync(fd)
    except OSError as e:
        test.assertEqual(e.errno, 28)
    return off


def pread(path, n, off):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def kernel_tracks_stores():
    """Linux 6.7 has what the library tracks stores with (userfaultfd's
    asynchronous write-protect, PAGEMAP_SCAN)."""
    rel = os.uname().release.split("-")[0].split(".")
    return tuple(int(x) for x in rel[:2]) >= (6, 7)


class DaxCase(PmfuseTestCase):
    """Children under the library are killed before the unmount."""
    region_size = "256M"
    track = True            # False: the library is told not to (PMFUSE_DAX_TRACK=0)

    def setUp(self):
        self.children = []
        self.tracked = int(self.track and kernel_tracks_stores())
        self._track_env = os.environ.pop("PMFUSE_DAX_TRACK", None)
        if not self.track:
            os.environ["PMFUSE_DAX_TRACK"] = "0"
        super().setUp()

    def tearDown(self):
        # a child still holding maps keeps the mount busy
        for c in self.children:
            if c.p.poll() is None:
                c.kill()
        super().tearDown()
        os.environ.pop("PMFUSE_DAX_TRACK", None)
        if self._track_env is not None:
            os.environ["PMFUSE_DAX_TRACK"] = self._track_env

    def child(self, **kw):
        c = Child(**kw)
        self.children.append(c)
        return c

    def congruent_region_maps(self, pid, size):
        """Process pid's mappings of the region of size bytes or more, each
        asserted to sit at an address congruent to its offset modulo size
        (what PMD/PUD pages need): how many there are."""
        region = os.path.realpath(self.region)
        n = 0
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6 or parts[5] != region:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if hi - lo >= size:
                    self.assertEqual((lo - int(parts[2], 16)) % size, 0, line)
                    n += 1
        return n

    def assertSessionsEnd(self):
        ok = wait_until(lambda: dax(self.mnt)["dax_maps"] == 0, 10)
        s = dax(self.mnt)
        self.assertTrue(ok, "sessions left: %s" % s)
        self.assertEqual(s["dax_mapped_bytes"], 0)
        self.assertEqual(s["dax_deferred_blocks"], 0)


@pmfuse_only
class DaxTest(DaxCase):
    def test_roundtrip(self):
        """Stores through a direct map are the file's bytes, byte for byte,
        through read(2); write(2) is seen through the map."""
        p = self.p("f")
        data = os.urandom(3 * MiB + 123)
        make_file(p, data)
        c = self.child()
        r = c("map", id=1, path=p, len=len(data))
        self.assertEqual(r["direct"], 1)
        self.assertEqual(c("sha", id=1, off=0, len=len(data))["sha"],
                         __import__("hashlib").sha256(data).hexdigest())
        before = dax(self.mnt)
        self.assertEqual(before["dax_maps"], 1)
        self.assertEqual(before["dax_mapped_bytes"], (len(data) + PAGE - 1) // PAGE * PAGE)
        c("fill", id=1, off=5000, len=10000, byte=0xAB)
        c("fill", id=1, off=len(data) - 7, len=7, byte=0xCD)
        expect = bytearray(data)
        expect[5000:15000] = b"\xab" * 10000
        expect[-7:] = b"\xcd" * 7
        self.assertEqual(pread(p, len(data), 0), bytes(expect))
        c("msync", id=1)
        after = dax(self.mnt)
        # 10000 bytes from 5000 touch pages 1..3, the tail one page: 4 faults
        # (through the library at the stores; in the kernel, counted at msync,
        # when the kernel tracks stores)
        self.assertEqual(after["dax_faults"] - before["dax_faults"], 4)
        self.assertEqual(after["dax_flush_bytes"] - before["dax_flush_bytes"], 4 * PAGE)
        self.assertEqual(after["dax_fault_allocs"], before["dax_fault_allocs"])
        # and the other way round
        fd = os.open(p, os.O_RDWR)
        os.pwrite(fd, b"written", 3 * MiB)
        os.close(fd)
        self.assertEqual(bytes.fromhex(c("read", id=1, off=3 * MiB, len=7)["hex"]), b"written")
        c("msync", id=1)
        c("unmap", id=1)
        self.assertEqual(dax(self.mnt)["dax_maps"], 0)
        c.exit()
        self.remount()
        expect[3 * MiB:3 * MiB + 7] = b"written"
        self.assertEqual(pread(p, len(data), 0), bytes(expect))

    def test_holes_allocate_nothing(self):
        """Reading a mapped 1 GiB sparse file allocates nothing and writes
        nothing to the region: holes come from the zero page."""
        p = self.p("sparse")
        make_file(p, size=1 << 30)
        c = self.child()
        before = dax(self.mnt)
        c("map", id=1, path=p, len=1 << 30)
        self.assertEqual(c("touch", id=1, off=0, len=1 << 30)["or"], 0)
        after = dax(self.mnt)
        self.assertEqual(after["blocks_free"], before["blocks_free"])
        self.assertEqual(after["flush_bytes"], before["flush_bytes"])
        self.assertEqual(after["dax_fault_allocs"], before["dax_fault_allocs"])
        self.assertEqual(os.stat(p).st_blocks, 0)
        c.exit()

    def test_sparse_writes_allocate_only_what_is_written(self):
        p = self.p("sparse")
        make_file(p, size=1 << 30)
        c = self.child()
        c("map", id=1, path=p, len=1 << 30)
        before = dax(self.mnt)
        offs = [7, 5 * MiB + 1, 900 * MiB + 4095]
        c("stores", id=1, offs=offs, byte=0x5A)
        after = dax(self.mnt)
        self.assertEqual(after["dax_fault_allocs"] - before["dax_fault_allocs"], 3)
        # the file's 3 blocks, and while the map lives the area of its dirty bits
        # (a block, and a bit per page of 1 GiB: 8 blocks)
        self.assertEqual(before["blocks_free"] - after["blocks_free"], 3 + 1 + 8)
        self.assertEqual(os.stat(p).st_blocks, 3 * PAGE // 512)
        for off in offs:
            page = pread(p, PAGE, off - off % PAGE)
            self.assertEqual(page, b"\0" * (off % PAGE) + b"\x5a" + b"\0" * (PAGE - off % PAGE - 1))
        c("msync", id=1)
        c.exit()
        self.assertSessionsEnd()
        self.assertEqual(before["blocks_free"] - dax(self.mnt)["blocks_free"], 3)

    def test_msync_flushes_only_dirty(self):
        """One 4 KiB store into a mapped file: msync of the whole mapping
        flushes at most 8 KiB; a second msync nothing; the next store faults
        again (the page was write-protected)."""
        p = self.p("big")
        make_file(p, os.urandom(64 * MiB))
        c = self.child()
        self.assertEqual(c("map", id=1, path=p, len=64 * MiB)["tracked"], self.tracked)
        c("msync", id=1)
        s0 = dax(self.mnt)
        c("fill", id=1, off=12 * MiB, len=PAGE, byte=1)
        c("msync", id=1)
        s2 = dax(self.mnt)
        self.assertEqual(s2["dax_faults"] - s0["dax_faults"], 1)
        flushed = s2["dax_flush_bytes"] - s0["dax_flush_bytes"]
        self.assertGreaterEqual(flushed, PAGE)
        self.assertLessEqual(flushed, 8192)
        c("msync", id=1)
        s3 = dax(self.mnt)
        self.assertEqual(s3["dax_flush_bytes"], s2["dax_flush_bytes"])
        self.assertEqual(s3["dax_faults"], s2["dax_faults"])
        c("fill", id=1, off=12 * MiB, len=1, byte=2)
        c("msync", id=1)
        s4 = dax(self.mnt)
        self.assertEqual(s4["dax_faults"] - s3["dax_faults"], 1)
        self.assertEqual(s4["dax_flush_bytes"] - s3["dax_flush_bytes"], flushed)
        c.exit()
        self.assertEqual(pread(p, 2, 12 * MiB), b"\x02\x01")

    def test_page_written_every_cycle_stays_writable_and_flushed(self):
        """A page stored to after every msync (a database's meta page) stops
        faulting through the library after a few cycles (with the kernel
        tracking stores it never did: one fault per cycle, in the kernel);
        every msync still flushes it, and the bytes are the file's."""
        p = self.p("meta")
        make_file(p, os.urandom(MiB))
        c = self.child()
        c("map", id=1, path=p, len=MiB)
        faults = []
        for k in range(8):
            s0 = dax(self.mnt)
            c("fill", id=1, off=PAGE, len=100, byte=k)
            c("msync", id=1)
            s1 = dax(self.mnt)
            faults.append(s1["dax_faults"] - s0["dax_faults"])
            self.assertGreaterEqual(s1["dax_flush_bytes"] - s0["dax_flush_bytes"], PAGE)
            self.assertEqual(pread(p, 100, PAGE), bytes([k]) * 100)
        if self.tracked:
            self.assertEqual(faults, [1] * 8)
        else:
            self.assertEqual(faults[:2], [1, 1])
            self.assertEqual(faults[-3:], [0, 0, 0])
        c.exit()
        self.assertSessionsEnd()

    def test_write_only_protection(self):
        """PROT_WRITE alone (fio's mmap engine for writes) is a direct map
        that msync can flush (write implies read, as on x86)."""
        p = self.p("w")
        make_file(p, b"\0" * MiB)
        c = self.child()
        self.assertEqual(c("map", id=1, path=p, len=MiB, write_only=True)["direct"], 1)
        for k in range(3):
            c("fill", id=1, off=k * 3 * PAGE, len=PAGE + 10, byte=k + 1)
            c("msync", id=1)
        c.exit()
        for k in range(3):
            self.assertEqual(pread(p, PAGE + 10, k * 3 * PAGE), bytes([k + 1]) * (PAGE + 10))

    def test_fsync_flushes_what_maps_store(self):
        """fsync(2) of the file from another process flushes the pages a
        live map may store to, every time: they stay dirty while granted."""
        p = self.p("f")
        make_file(p, os.urandom(4 * MiB))
        c = self.child()
        c("map", id=1, path=p, len=4 * MiB)
        c("fill", id=1, off=MiB, len=PAGE, byte=3)
        fd = os.open(p, os.O_RDWR)
        try:
            for _ in range(2):
                s0 = fs_stats(self.mnt)
                os.fsync(fd)
                s1 = fs_stats(self.mnt)
                self.assertGreaterEqual(s1["flush_bytes"] - s0["flush_bytes"], PAGE)
                c("fill", id=1, off=MiB, len=1, byte=4)     # no fault: still granted
        finally:
            os.close(fd)
        c.exit()
        self.assertEqual(pread(p, 2, MiB), b"\x04\x03")

    def test_msync_of_the_whole_map_ends_dirty_state(self):
        """Stores into two places of a mapped file, then msync of the whole
        map twice: the second finds nothing stored, and an fsync after it
        flushes nothing of the map's (with tracking: the windows stored to
        went back to read-only; the next store faults through the library
        again)."""
        p = self.p("f")
        make_file(p, os.urandom(8 * MiB))
        c = self.child()
        c("map", id=1, path=p, len=8 * MiB)
        fd = os.open(p, os.O_RDWR)
        try:    # the session's first fault is the daemon's: it marks that page too
            c("fill", id=1, off=0, len=1, byte=0)
            c("msync", id=1)
            c("msync", id=1)
            os.fsync(fd)
        finally:
            os.close(fd)
        c("fill", id=1, off=MiB, len=10, byte=1)
        c("fill", id=1, off=5 * MiB, len=10, byte=2)
        s0 = dax(self.mnt)
        c("msync", id=1)
        s1 = dax(self.mnt)
        self.assertEqual(s1["dax_flush_bytes"] - s0["dax_flush_bytes"], 2 * PAGE)
        c("msync", id=1)
        s2 = dax(self.mnt)
        self.assertEqual(s2["dax_flush_bytes"], s1["dax_flush_bytes"])
        fd = os.open(p, os.O_RDWR)
        try:
            os.fsync(fd)
            self.assertEqual(dax(self.mnt)["flush_bytes"], s2["flush_bytes"])
            c("fill", id=1, off=5 * MiB + PAGE, len=10, byte=3)
            s3 = dax(self.mnt)
            os.fsync(fd)    # the store is seen by the daemon at once
            self.assertGreaterEqual(dax(self.mnt)["flush_bytes"] - s3["flush_bytes"], PAGE)
        finally:
            os.close(fd)
        c.exit()
        self.assertEqual(pread(p, 1, MiB) + pread(p, 1, 5 * MiB) + pread(p, 1, 5 * MiB + PAGE),
                         b"\x01\x02\x03")

    def test_partial_munmap_keeps_both_pieces_right(self):
        """munmap of the middle of a direct map splits it: the pieces left
        keep storing, faulting and flushing; what was stored in the middle
        before the munmap is the file's."""
        p = self.p("f")
        make_file(p, os.urandom(8 * MiB))
        c = self.child()
        c("map", id=1, path=p, len=8 * MiB)
        c("fill", id=1, off=MiB, len=PAGE, byte=1)
        c("fill", id=1, off=3 * MiB, len=PAGE, byte=2)
        c("fill", id=1, off=5 * MiB, len=PAGE, byte=3)
        c("unmap_part", id=1, off=2 * MiB + PAGE, len=2 * MiB)
        s0 = dax(self.mnt)
        c("fill", id=1, off=MiB + PAGE, len=PAGE, byte=4)
        c("fill", id=1, off=6 * MiB, len=PAGE, byte=5)
        # msync of a range with a hole in the map fails ENOMEM, as the kernel's
        pieces = ((0, 2 * MiB + PAGE), (4 * MiB + PAGE, 4 * MiB - PAGE))
        for off, n in pieces:
            c("msync", id=1, off=off, len=n)
        s1 = dax(self.mnt)
        self.assertGreaterEqual(s1["dax_flush_bytes"] - s0["dax_flush_bytes"], 2 * PAGE)
        for off, b in ((MiB, 1), (3 * MiB, 2), (5 * MiB, 3), (MiB + PAGE, 4), (6 * MiB, 5)):
            self.assertEqual(pread(p, PAGE, off), bytes([b]) * PAGE, "at %d" % off)
        for off, n in pieces:
            c("msync", id=1, off=off, len=n)
        c("fill", id=1, off=7 * MiB, len=PAGE, byte=6)
        for off, n in pieces:
            c("msync", id=1, off=off, len=n)
        c.kill()
        self.assertSessionsEnd()
        self.remount()
        for off, b in ((MiB, 1), (3 * MiB, 2), (5 * MiB, 3), (MiB + PAGE, 4), (6 * MiB, 5),
                       (7 * MiB, 6)):
            self.assertEqual(pread(p, PAGE, off), bytes([b]) * PAGE, "at %d" % off)

    def test_store_anywhere_then_msync_all(self):
        """A store to a new place, then msync of the whole map, many times
        (fio's mmap engine with fsync=1): every store is the file's, each
        msync flushes the page stored (and, with tracking, the map falls
        back to faulting page by page, which costs less there)."""
        p = self.p("f")
        make_file(p, os.urandom(16 * MiB))
        c = self.child()
        c("map", id=1, path=p, len=16 * MiB)
        rnd = random.Random(7)
        offs = [rnd.randrange(16 * MiB // PAGE) * PAGE for _ in range(200)]
        for k, off in enumerate(offs):
            s0 = dax(self.mnt)
            c("fill", id=1, off=off, len=100, byte=k % 251)
            c("msync", id=1)
            self.assertGreaterEqual(dax(self.mnt)["dax_flush_bytes"] - s0["dax_flush_bytes"], PAGE)
        self.assertEqual(c("tracked", id=1)["tracked"], 0)
        last = {}
        for k, off in enumerate(offs):
            last[off] = k % 251
        c.exit()
        for off, b in last.items():
            self.assertEqual(pread(p, 100, off), bytes([b]) * 100, "at %d" % off)

    def test_munmap_hands_over_only_stored_pages(self):
        """munmap of a map of written pages after one store: the daemon gets
        that page DIRTY and no other, so the fsync that follows flushes one
        page of the 16 MiB mapped (with tracking, the kernel says which)."""
        p = self.p("f")
        make_file(p, os.urandom(16 * MiB))
        c = self.child()
        c("map", id=1, path=p, len=16 * MiB)
        c("fill", id=1, off=5 * MiB + 10, len=20, byte=0x5A)
        c("unmap", id=1)
        fd = os.open(p, os.O_RDWR)
        try:
            s0 = dax(self.mnt)
            os.fsync(fd)
            s1 = dax(self.mnt)
            flushed = s1["flush_bytes"] - s0["flush_bytes"]
            self.assertGreaterEqual(flushed, PAGE)
            self.assertLessEqual(flushed, 2 * PAGE)
            os.fsync(fd)
            self.assertEqual(dax(self.mnt)["flush_bytes"], s1["flush_bytes"])
        finally:
            os.close(fd)
        c.exit()
        self.assertEqual(pread(p, 22, 5 * MiB + 9)[1:21], b"\x5a" * 20)

    def test_killed_process_stores_are_flushed_by_fsync(self):
        """kill -9 of a process holding a map of written pages: its stores
        are the file's, and the next fsync flushes them (with tracking the
        daemon cannot know which pages were stored to, so it flushes every
        page of the 2 MiB window stored into: the pages the map could store
        to without a fault through the library)."""
        p = self.p("f")
        make_file(p, os.urandom(4 * MiB))
        c = self.child()
        c("map", id=1, path=p, len=4 * MiB)
        c("msync", id=1)
        c("fill", id=1, off=3 * MiB, len=PAGE, byte=0x77)
        c.kill()
        self.assertSessionsEnd()
        fd = os.open(p, os.O_RDWR)
        try:
            s0 = dax(self.mnt)
            os.fsync(fd)
            flushed = dax(self.mnt)["flush_bytes"] - s0["flush_bytes"]
        finally:
            os.close(fd)
        self.assertGreaterEqual(flushed, 2 * MiB if self.tracked else PAGE)
        self.assertEqual(pread(p, PAGE, 3 * MiB), b"\x77" * PAGE)

    def test_killed_process_ends_its_sessions(self):
        p = self.p("f")
        make_file(p, size=8 * MiB)
        c = self.child()
        c("map", id=1, path=p, len=8 * MiB)
        c("map", id=2, path=p, len=4 * MiB, off=4 * MiB)
        c("fill", id=1, off=0, len=2 * PAGE, byte=9)
        c("fill", id=2, off=0, len=PAGE, byte=8)
        self.assertEqual(dax(self.mnt)["dax_maps"], 2)
        c.kill()
        self.assertSessionsEnd()
        self.assertEqual(pread(p, 1, 0), b"\x09")
        self.assertEqual(pread(p, 1, 4 * MiB), b"\x08")
        self.remount()
        self.assertEqual(pread(p, 1, 4 * MiB), b"\x08")

    def test_blocks_never_reused_while_mapped(self):
        """Punch, truncate and unlink of a mapped file: the blocks the map
        still reaches go to no other file, whatever the map stores to them,
        until the map is gone; then the space comes back."""
        p = self.p("victim")
        n = 16 * MiB
        make_file(p, b"\x11" * n)
        free0 = os.statvfs(self.mnt).f_bfree
        c = self.child()
        c("map", id=1, path=p, len=n)
        c("fill", id=1, off=0, len=n, byte=0x22)        # every page granted
        fd = os.open(p, os.O_RDWR)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4 * MiB)
        os.ftruncate(fd, 8 * MiB)
        os.close(fd)
        os.unlink(p)
        s = dax(self.mnt)
        self.assertEqual(s["dax_deferred_blocks"], 12 * MiB // PAGE)
        # fill the rest of the region with another file
        other = self.p("other")
        fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o644)
        off = fill_region(self, fd)
        # the map stores everywhere it still can
        c("fill", id=1, off=0, len=n, byte=0x33)
        c("msync", id=1)
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            got = os.pread(fd, 4 * MiB, pos)
            self.assertNotIn(b"\x33", got, "a mapped block went to another file")
            self.assertNotIn(b"\x22", got)
            pos += len(got)
        os.close(fd)
        os.unlink(other)
        c.exit()
        self.assertSessionsEnd()
        self.assertTrue(wait_until(lambda: os.statvfs(self.mnt).f_bfree >= free0 + n // PAGE, 10),
                        "space not returned: %d < %d" % (os.statvfs(self.mnt).f_bfree,
                                                         free0 + n // PAGE))

    def test_punch_through_own_process_reads_zeros_after(self):
        """A punched range of a read-only map reads as zeros (the base
        layer is the page cache, which the punch dropped) once no overlay
        covers it: a fresh map after the punch sees zeros at once."""
        p = self.p("f")
        make_file(p, b"\x44" * (2 * MiB))
        fd = os.open(p, os.O_RDWR)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB, MiB)
        os.close(fd)
        c = self.child()
        c("map", id=1, path=p, len=2 * MiB, write=False)
        self.assertEqual(c("touch", id=1, off=MiB, len=MiB)["or"], 0)
        self.assertEqual(bytes.fromhex(c("read", id=1, off=0, len=2)["hex"]), b"\x44\x44")
        c.exit()

    def test_cached_reader_sees_map_stores_after_msync(self):
        p = self.p("f")
        make_file(p, b"a" * (64 * 1024))
        rd = os.open(p, os.O_RDONLY)
        self.assertEqual(os.pread(rd, 4, 0), b"aaaa")       # now in its page cache
        c = self.child()
        c("map", id=1, path=p, len=64 * 1024)
        c("fill", id=1, off=0, len=4, byte=ord("b"))
        c("msync", id=1)
        self.assertEqual(os.pread(rd, 4, 0), b"bbbb")
        os.close(rd)
        c.exit()

    def test_write_into_hole_seen_through_map(self):
        p = self.p("f")
        make_file(p, size=4 * MiB)
        c = self.child()
        c("map", id=1, path=p, len=4 * MiB)
        self.assertEqual(c("touch", id=1, off=0, len=4 * MiB)["or"], 0)
        fd = os.open(p, os.O_RDWR)
        os.pwrite(fd, b"hole filled", 2 * MiB + 10)
        os.close(fd)
        self.assertEqual(bytes.fromhex(c("read", id=1, off=2 * MiB + 10, len=11)["hex"]),
                         b"hole filled")
        c("fill", id=1, off=2 * MiB, len=10, byte=ord("x"))   # store to that page now
        self.assertEqual(pread(p, 21, 2 * MiB), b"x" * 10 + b"hole filled")
        c.exit()

    def test_resize(self):
        """mremap of a direct map (Python's mmap.resize): the map moves
        and stays direct; what was stored stays."""
        p = self.p("f")
        make_file(p, size=MiB)
        c = self.child()
        c("map", id=1, path=p, len=MiB)
        c("fill", id=1, off=0, len=10, byte=1)
        r = c("resize", id=1, len=2 * MiB)
        self.assertEqual(r["direct"], 1)
        c("fill", id=1, off=2 * MiB - 10, len=10, byte=2)
        c("msync", id=1)
        self.assertEqual(os.stat(p).st_size, 2 * MiB)
        self.assertEqual(pread(p, 10, 0), b"\x01" * 10)
        self.assertEqual(pread(p, 10, 2 * MiB - 10), b"\x02" * 10)
        c.exit()
        self.assertSessionsEnd()

    def test_huge_extents_map_at_aligned_addresses(self):
        """Extents aligned to 2 MiB in the region are mapped at addresses
        with the same alignment (what a devdax region needs for PMD pages)."""
        p = self.p("big")
        make_file(p, os.urandom(32 * MiB))
        before = dax(self.mnt)
        c = self.child()
        r = c("map", id=1, path=p, len=32 * MiB)
        huge = dax(self.mnt)["dax_huge_maps"] - before["dax_huge_maps"]
        self.assertGreater(huge, 0)
        # every region mapping of 2 MiB or more: address congruent to its offset
        self.assertGreater(self.congruent_region_maps(c.p.pid, 2 * MiB), 0)
        self.assertGreaterEqual(r["addr"], 0)
        c.exit()

    def test_c_program_preloaded_and_linked(self):
        p = self.p("c")
        make_file(p, b"\0" * MiB)
        for prog, env, byte in ((DAXPROG, preload_env(), 0x61), (DAXPROG_LINKED, None, 0x62)):
            s0 = dax(self.mnt)
            out = subprocess.run([prog, "store", p, "4096", "10000", str(byte), "msync"],
                                 capture_output=True, text=True, env=env, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("direct 1", out.stdout)
            self.assertEqual(pread(p, 10000, 4096), bytes([byte]) * 10000)
            self.assertGreater(dax(self.mnt)["dax_faults"], s0["dax_faults"])
        self.assertSessionsEnd()

    def test_application_sigsegv_handler_still_runs(self):
        p = self.p("c")
        make_file(p, b"\0" * (64 * 1024))
        out = subprocess.run([DAXPROG, "chain", p], capture_output=True, text=True,
                             env=preload_env(), timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("chained 1 direct 1", out.stdout)
        self.assertEqual(pread(p, 1, 0), b"a")
        self.assertEqual(pread(p, 1, 64 * 1024 - 1), b"z")

    def test_partial_munmap_and_mprotect_split_the_map(self):
        """A direct map cut in pieces (munmap of the middle, across a 2 MiB
        extent; mprotect of a part) keeps every piece direct and its stores
        durable, and the hole is gone."""
        p = self.p("pieces")
        make_file(p, os.urandom(8 * MiB))      # written: 2 MiB extents
        want = bytearray(pread(p, 8 * MiB, 0))
        for prog, env in ((DAXPROG, preload_env()), (DAXPROG_LINKED, None)):
            huge = dax(self.mnt)["dax_huge_maps"]
            out = subprocess.run([prog, "pieces", p], capture_output=True, text=True,
                                 env=env, timeout=60)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertIn("hole faults direct 1", out.stdout)
            self.assertGreater(dax(self.mnt)["dax_huge_maps"], huge,
                               "no 2 MiB extent was mapped, so none was carved")
            for o in range(0, 8 * MiB, MiB):
                want[o] = ord("a")
                if not (MiB + PAGE <= o < 3 * MiB - PAGE):
                    want[o + 1] = ord("b")
            want[MiB + PAGE - 1] = ord("L")
            want[3 * MiB - PAGE] = ord("R")
            self.assertEqual(pread(p, 8 * MiB, 0), bytes(want), prog)
        self.assertSessionsEnd()
        self.remount()
        self.assertEqual(pread(p, 8 * MiB, 0), bytes(want))

    def test_read_into_map(self):
        """read(2), readv, preadv, recv and recvmsg into a writable direct
        map: the kernel's stores do not fault through the library, so it
        grants the pages first."""
        p = self.p("c")
        src = os.path.join(self.workdir, "src")
        data = os.urandom(65536)
        with open(src, "wb") as f:
            f.write(data)
        for how in ("read", "readv", "preadv", "recv", "recvmsg"):
            make_file(p, size=128 * 1024)       # a new file: holes
            out = subprocess.run([DAXPROG, "readinto", p, src, how], capture_output=True,
                                 text=True, env=preload_env(), timeout=60)
            self.assertEqual(out.returncode, 0, how + ": " + out.stderr)
            self.assertIn("read 65536 direct 1", out.stdout, how)
            self.assertEqual(pread(p, 65536, 0), data, how)
            os.unlink(p)

    def test_map_sync_refused_at_page_granularity(self):
        """As the kernel for a file that is not DAX: EOPNOTSUPP."""
        p = self.p("c")
        make_file(p, b"\0" * PAGE)
        out = subprocess.run([DAXPROG, "store", p, "0", "1", "1", "sync"], capture_output=True,
                             text=True, env=preload_env(), timeout=60)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("Operation not supported", out.stderr)

    def test_private_and_readonly_maps(self):
        """MAP_PRIVATE is an ordinary map; a read-only map is direct and
        allocates nothing."""
        p = self.p("f")
        make_file(p, b"r" * MiB)
        c = self.child()
        r = c("map", id=1, path=p, len=MiB, write=False)
        self.assertEqual(r["direct"], 1)
        self.assertEqual(bytes.fromhex(c("read", id=1, off=MiB - 2, len=2)["hex"]), b"rr")
        c.exit()
        code = ("import mmap, os, ctypes\n"
                "fd = os.open(%r, os.O_RDWR)\n"
                "m = mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)\n"
                "m[0] = 0x7a\n"
                "f = ctypes.CDLL(None).pmfuse_dax_is_direct\n"
                "f.argtypes = [ctypes.c_void_p]\n"
                "c = ctypes.c_char.from_buffer(m)\n"
                "print(f(ctypes.addressof(c)))\n" % p)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=preload_env(), timeout=60)
        self.assertEqual(out.stdout.strip(), "0", out.stderr)
        self.assertEqual(pread(p, 1, 0), b"r")


@pmfuse_only
class DaxGiantTest(DaxCase):
    region_size = "3G"

    def test_1g_extent_maps_at_a_1g_aligned_address(self):
        """A file extent that holds a 1 GiB-aligned GiB of the region is
        mapped at an address congruent to it modulo 1 GiB (what a devdax
        region needs for PUD pages)."""
        p = self.p("giant")
        chunk = b"\x01" * MiB
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, 1 << 30)     # one 1 GiB-aligned run, then written
            for _ in range(1280):
                os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.assertGreater(fs_stats(self.mnt)["huge_1g_extents"], 0,
                           "the allocator placed no 1 GiB extent")
        c = self.child()
        self.assertEqual(c("map", id=1, path=p, len=1280 * MiB, write=False)["direct"], 1)
        self.assertEqual(self.congruent_region_maps(c.p.pid, 1 << 30), 1)
        self.assertEqual(c("read", id=1, off=1 << 30, len=4)["hex"], "01010101")
        c.exit()
        self.assertSessionsEnd()


@pmfuse_only
class DaxFaultingTest(DaxTest):
    """The same with stores faulting through the library (kernels before
    6.7, devdax regions, PMFUSE_DAX_TRACK=0)."""
    track = False


@pmfuse_only
class DaxRestartTest(DaxCase):
    """A daemon that stops while processes still map its region: the next
    one keeps every block those maps reach out of reuse until they go."""

    def test_blocks_of_an_earlier_daemons_maps_stay_out_of_reuse(self):
        p = self.p("victim")
        n = 8 * MiB
        make_file(p, b"\x11" * n)
        fresh = os.statvfs(self.mnt)
        c = self.child()
        c("map", id=1, path=p, len=n)
        c("fill", id=1, off=0, len=n, byte=0x22)        # every page granted
        os.unlink(p)            # an orphan while mapped; the next mount reclaims it
        self.crash()
        self.assertFsckClean()
        self.m = self.mount()
        s = dax(self.mnt)
        self.assertGreaterEqual(s["dax_quarantined_blocks"], n // PAGE)   # and its shared area
        # the region's free space is taken by another file ...
        other = self.p("other")
        fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o644)
        off = fill_region(self, fd)
        # ... while the old map goes on storing where it was allowed to
        c("fill", id=1, off=0, len=n, byte=0x33)
        pos = 0
        while pos < off:
            got = os.pread(fd, 4 * MiB, pos)
            self.assertNotIn(b"\x33", got, "a block the old map reaches went to another file")
            pos += len(got)
        os.close(fd)
        os.unlink(other)
        c.kill()
        # the watcher lets go once the map is gone
        self.assertTrue(wait_until(lambda: dax(self.mnt)["dax_quarantined_blocks"] == 0, 15))
        self.assertTrue(wait_until(lambda: os.statvfs(self.mnt).f_bfree >= fresh.f_bfree + n // PAGE,
                                   10), "space not returned")


@pmfuse_only
class DaxPermissionTest(PmfuseTestCase):
    mount_opts = ("allow_other",)

    def test_user_who_cannot_open_the_region_gets_an_ordinary_map(self):
        os.chmod(self.region, 0o600)
        p = self.p("shared")
        make_file(p, b"\0" * MiB)
        os.chmod(p, 0o666)
        c = Child(user=1000)
        try:
            r = c("map", id=1, path=p, len=MiB)
            self.assertEqual(r["direct"], 0)
            c("fill", id=1, off=0, len=100, byte=0x55)
            c("msync", id=1)
            c.exit()
        finally:
            if c.p.poll() is None:
                c.kill()
        self.assertEqual(pread(p, 100, 0), b"\x55" * 100)
        s = dax(self.mnt)
        self.assertEqual((s["dax_faults"], s["dax_maps"], s["dax_mapped_bytes"]), (0, 0, 0))


@pmfuse_only
class DaxSyncTest(PmfuseTestCase):
    """Cache-line granularity forced on the region file: MAP_SYNC is
    accepted and a store plus CPU flushes is durable, no msync."""

    def setUp(self):
        os.environ["PMEM2_FORCE_GRANULARITY"] = "cache_line"
        self.addCleanup(os.environ.pop, "PMEM2_FORCE_GRANULARITY", None)
        super().setUp()

    def test_map_sync_store_survives_kill_of_both(self):
        p = self.p("sync")
        make_file(p, size=2 * MiB)          # a hole: the fault allocates and commits
        for prog in (DAXPROG, DAXPROG_LINKED):
            env = preload_env() if prog == DAXPROG else None
            byte = 0x71 if prog == DAXPROG else 0x72
            off = 0 if prog == DAXPROG else MiB + 17
            proc = subprocess.Popen([prog, "store", p, str(off), "5000", str(byte), "sync", "hold"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
            try:
                self.assertEqual(proc.stdout.readline().strip(), "direct 1", proc.stderr)
                self.assertEqual(proc.stdout.readline().strip(), "ready")
            finally:
                proc.kill()
                proc.wait(10)
                proc.stdout.close()
                proc.stderr.close()
        self.crash()
        self.assertFsckClean()
        self.m = self.mount()
        self.assertEqual(pread(p, 5000, 0), b"\x71" * 5000)
        self.assertEqual(pread(p, 5000, MiB + 17), b"\x72" * 5000)
        self.assertEqual(os.stat(p).st_size, 2 * MiB)


@pmfuse_only
@unittest.skipUnless(os.path.exists(SYS_PYTHON) and subprocess.run(
    [SYS_PYTHON, "-c", "import lmdb"], capture_output=True).returncode == 0,
    "python3-lmdb not installed")
class DaxLmdbTest(PmfuseTestCase):
    """LMDB, a program nobody here wrote, with writemap under the preload."""
    region_size = "512M"
    test_timeout = 300

    WRITER = r'''
import lmdb, sys
n, start = int(sys.argv[2]), int(sys.argv[3])
env = lmdb.open(sys.argv[1], map_size=128 << 20, writemap=True, sync=True, metasync=True)
val = b"v" * 100
for i in range(start, start + n):
    with env.begin(write=True) as txn:
        txn.put(b"k%08d" % i, val + b"%08d" % i)
    print(i, flush=True)
env.close()
'''
    CHECK = r'''
import lmdb, sys
env = lmdb.open(sys.argv[1], map_size=128 << 20, writemap=True)
with env.begin() as txn:
    keys = [k for k, _ in txn.cursor()]
    ok = all(txn.get(k) == b"v" * 100 + k[1:] for k in keys)
print(len(keys), keys[-1].decode() if keys else "-", ok)
'''

    def run_sys(self, code, *args, **kw):
        return subprocess.run([SYS_PYTHON, "-c", code] + [str(a) for a in args],
                              capture_output=True, text=True, env=preload_env(), timeout=240, **kw)

    def test_lmdb_commits_and_survives_kill(self):
        db = self.p("db")
        os.mkdir(db)
        s0 = dax(self.mnt)
        out = self.run_sys(self.WRITER, db, 20000, 0)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        s1 = dax(self.mnt)
        self.assertGreater(s1["dax_faults"] - s0["dax_faults"], 20000,
                           "LMDB's stores did not go through direct maps")
        self.assertGreater(s1["dax_flush_bytes"], s0["dax_flush_bytes"])
        chk = self.run_sys(self.CHECK, db)
        self.assertEqual(chk.stdout.split(), ["20000", "k00019999", "True"], chk.stderr)
        # kill -9 the writer at a random point: every commit it reported stays
        rnd = random.Random(int(time.time()))
        stop_after = rnd.randrange(500, 5000)
        proc = subprocess.Popen([SYS_PYTHON, "-c", self.WRITER, db, "20000", "20000"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=preload_env())
        last = None
        try:
            for _ in range(stop_after):
                line = proc.stdout.readline()
                if not line:
                    break
                last = int(line)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
        self.assertIsNotNone(last, "the writer committed nothing")
        self.assertSessionsEndLmdb()
        chk = self.run_sys(self.CHECK, db)
        count, lastkey, ok = chk.stdout.split()
        self.assertEqual(ok, "True", chk.stderr)
        self.assertGreaterEqual(int(count), last + 1, "committed transactions lost")
        self.assertEqual(int(count), int(lastkey[1:]) + 1)
        self.remount()
        chk = self.run_sys(self.CHECK, db)
        self.assertGreaterEqual(int(chk.stdout.split()[0]), last + 1, chk.stderr)

    def assertSessionsEndLmdb(self):
        self.assertTrue(wait_until(lambda: dax(self.mnt)["dax_maps"] == 0, 10))


if __name__ == "__main__":
    main()
