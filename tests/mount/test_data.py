#!/usr/bin/env python3
"""pmfuse mount tests: file data -- read/write, sparse files, truncate,
fallocate, space accounting, ENOSPC, unlinked-open files."""

import contextlib
import errno
import mmap
import os
import random
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DAEMON, REFERENCE, PmfuseTestCase, fallocate, fs_stats, main,  # noqa: E402
                     pmfuse_only, run,
                     pread_all, pwrite_all, read_file, requests_during, sha256_bytes,
                     sha256_file, wait_until, write_file)

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


def pattern(nbytes, seed):
    return random.Random(seed).randbytes(nbytes)


class FileDataTest(PmfuseTestCase):

    def test_small_write_reads_back_exactly(self):
        p = self.p("small")
        write_file(p, b"hello, pmfuse\n")
        self.assertEqual(read_file(p), b"hello, pmfuse\n")
        self.assertEqual(os.stat(p).st_size, 14)

    def test_empty_file_has_size_zero_and_reads_empty(self):
        p = self.p("empty")
        write_file(p, b"")
        st = os.stat(p)
        self.assertEqual(st.st_size, 0)
        self.assertEqual(st.st_blocks, 0)
        self.assertEqual(read_file(p), b"")

    def test_unaligned_write_at_odd_offset_reads_back_with_zero_prefix(self):
        p = self.p("unaligned")
        data = pattern(10001, 1)
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            pwrite_all(fd, data, 4093)
            self.assertEqual(os.fstat(fd).st_size, 4093 + 10001)
            self.assertEqual(pread_all(fd, 4093, 0), bytes(4093))
            self.assertEqual(pread_all(fd, 10001, 4093), data)
            # reads that straddle block boundaries
            self.assertEqual(pread_all(fd, 10, 4090), bytes(3) + data[:7])
            self.assertEqual(pread_all(fd, 300, 8000), data[8000 - 4093:8300 - 4093])
        finally:
            os.close(fd)
        self.assertEqual(read_file(p), bytes(4093) + data)

    def test_random_writes_at_random_offsets_match_an_in_memory_model(self):
        seed = random.randrange(1 << 30)
        rng = random.Random(seed)
        size = 6 * MiB
        model = bytearray(size)
        model[:] = pattern(size, seed)
        p = self.p("random")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            pwrite_all(fd, model, 0)
            end = size
            for _ in range(300):
                n = rng.choice([1, 7, 511, 4096, 4097, rng.randrange(1, 300 * KiB)])
                off = rng.randrange(0, size + MiB)
                buf = rng.randbytes(n)
                pwrite_all(fd, buf, off)
                if off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = buf
                end = max(end, off + n)
            self.assertEqual(os.fstat(fd).st_size, len(model), "seed %d" % seed)
            for _ in range(200):
                off = rng.randrange(0, len(model))
                n = rng.randrange(1, 200 * KiB)
                self.assertEqual(pread_all(fd, n, off), bytes(model[off:off + n]),
                                 "read of %d at %d differs (seed %d)" % (n, off, seed))
        finally:
            os.close(fd)
        self.assertEqual(sha256_file(p), sha256_bytes(model), "seed %d" % seed)
        self.remount()
        self.assertEqual(sha256_file(p), sha256_bytes(model), "after remount, seed %d" % seed)

    def test_data_persists_across_unmount_and_remount(self):
        files = {
            "one-byte": b"x",
            "block": pattern(4096, 2),
            "block-plus-one": pattern(4097, 3),
            "three-mib": pattern(3 * MiB + 123, 4),
            "two-mib-aligned": pattern(2 * MiB, 5),
        }
        os.mkdir(self.p("sub"))
        files["sub/nested"] = pattern(70000, 6)
        for name, data in files.items():
            write_file(self.p(name), data)
        sparse = self.p("sparse")
        with open(sparse, "wb") as f:
            f.seek(5 * MiB + 17)
            f.write(b"tail")
        want = {name: (sha256_bytes(data), len(data)) for name, data in files.items()}
        want["sparse"] = (sha256_file(sparse), 5 * MiB + 21)
        self.remount()
        for name, (digest, size) in want.items():
            self.assertEqual(os.stat(self.p(name)).st_size, size, name)
            self.assertEqual(sha256_file(self.p(name)), digest, name)

    def test_o_append_writes_always_go_to_the_end(self):
        p = self.p("append")
        write_file(p, b"start:")
        fd1 = os.open(p, os.O_WRONLY | os.O_APPEND)
        fd2 = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd1, b"a1")
            os.write(fd2, b"b1")
            os.lseek(fd1, 0, os.SEEK_SET)      # ignored by O_APPEND writes
            os.write(fd1, b"a2")
            os.write(fd2, b"b2")
        finally:
            os.close(fd1)
            os.close(fd2)
        self.assertEqual(read_file(p), b"start:a1b1a2b2")

    def test_o_trunc_empties_an_existing_file(self):
        p = self.p("trunc")
        write_file(p, pattern(3 * 4096 + 5, 7))
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        try:
            st = os.fstat(fd)
            self.assertEqual(st.st_size, 0)
            os.write(fd, b"new")
        finally:
            os.close(fd)
        self.assertEqual(read_file(p), b"new")
        # no stale blocks: the file occupies at most one block now
        self.assertLessEqual(os.stat(p).st_blocks, 8)

    def test_truncate_up_reads_zeros(self):
        p = self.p("grow")
        write_file(p, b"abc")
        os.truncate(p, 3 * MiB + 1)
        self.assertEqual(os.stat(p).st_size, 3 * MiB + 1)
        data = read_file(p)
        self.assertEqual(len(data), 3 * MiB + 1)
        self.assertEqual(data[:3], b"abc")
        self.assertEqual(data[3:], bytes(3 * MiB - 2))

    def test_truncate_down_then_up_does_not_resurrect_old_data(self):
        p = self.p("shrink")
        old = b"\xff" * (3 * 4096 + 100)
        write_file(p, old)
        os.truncate(p, 100)
        self.assertEqual(os.stat(p).st_size, 100)
        self.assertEqual(read_file(p), old[:100])
        os.truncate(p, len(old))
        data = read_file(p)
        self.assertEqual(data[:100], old[:100])
        self.assertEqual(data[100:], bytes(len(old) - 100),
                         "bytes past a truncation point must read as zeros")
        # the same through ftruncate on an open descriptor, mid-block
        fd = os.open(p, os.O_RDWR)
        try:
            pwrite_all(fd, b"\xee" * 8192, 0)
            os.ftruncate(fd, 5000)
            os.ftruncate(fd, 8192)
            self.assertEqual(pread_all(fd, 8192, 0), b"\xee" * 5000 + bytes(3192))
        finally:
            os.close(fd)
        self.remount()
        self.assertEqual(read_file(p)[:8192], b"\xee" * 5000 + bytes(3192))

    def test_truncate_to_zero_releases_blocks(self):
        p = self.p("zero")
        write_file(p, pattern(MiB, 8), fsync=True)
        self.assertGreaterEqual(os.stat(p).st_blocks, MiB // 512)
        os.truncate(p, 0)
        st = os.stat(p)
        self.assertEqual(st.st_size, 0)
        self.assertEqual(st.st_blocks, 0)

    def test_write_past_eof_leaves_a_zero_gap(self):
        p = self.p("gap")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"head")
            pwrite_all(fd, b"tail", 100000)
            self.assertEqual(os.fstat(fd).st_size, 100004)
            self.assertEqual(pread_all(fd, 100004, 0), b"head" + bytes(100000 - 4) + b"tail")
        finally:
            os.close(fd)

    def test_read_at_and_past_eof(self):
        p = self.p("eof")
        write_file(p, b"0123456789")
        fd = os.open(p, os.O_RDONLY)
        try:
            self.assertEqual(os.pread(fd, 100, 5), b"56789")
            self.assertEqual(os.pread(fd, 100, 10), b"")
            self.assertEqual(os.pread(fd, 100, 1 << 40), b"")
        finally:
            os.close(fd)

    def test_sparse_writes_far_apart_read_zeros_in_the_hole(self):
        p = self.p("holes")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        far = 100 * MiB + 7
        try:
            pwrite_all(fd, b"first", 0)
            pwrite_all(fd, b"second", far)
            os.fsync(fd)
            st = os.fstat(fd)
            self.assertEqual(st.st_size, far + 6)
            self.assertLess(st.st_blocks, 64, "holes must not be allocated")
            self.assertEqual(pread_all(fd, 5, 0), b"first")
            self.assertEqual(pread_all(fd, 6, far), b"second")
            for off in (5, 4096, 2 * MiB, 50 * MiB, far - 4096):
                self.assertEqual(pread_all(fd, 4096, off), bytes(4096), "hole at %d" % off)
        finally:
            os.close(fd)

    def test_one_tib_sparse_file_uses_almost_no_space(self):
        p = self.p("huge")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, TiB)
            pwrite_all(fd, b"END!", TiB - 4)
            pwrite_all(fd, b"middle", 512 * GiB)
            os.fsync(fd)
        finally:
            os.close(fd)

        def check():
            st = os.stat(p)
            self.assertEqual(st.st_size, TiB)
            self.assertLess(st.st_blocks, 64)
            fd = os.open(p, os.O_RDONLY)
            try:
                self.assertEqual(pread_all(fd, 4, TiB - 4), b"END!")
                self.assertEqual(pread_all(fd, 6, 512 * GiB), b"middle")
                self.assertEqual(pread_all(fd, 8192, 512 * GiB - 4096), bytes(4096) + b"middle" + bytes(4090))
                self.assertEqual(pread_all(fd, 64 * KiB, 3 * GiB + 5), bytes(64 * KiB))
                self.assertEqual(pread_all(fd, 100, TiB - 50), bytes(46) + b"END!")
                self.assertEqual(os.lseek(fd, 0, os.SEEK_END), TiB)
            finally:
                os.close(fd)
        check()
        self.remount()
        check()

    def test_fsync_and_fdatasync_succeed_on_files_and_directories(self):
        p = self.p("synced")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, pattern(100000, 9))
            self.assertIsNone(os.fsync(fd))
            os.write(fd, b"more")
            self.assertIsNone(os.fdatasync(fd))
        finally:
            os.close(fd)
        dfd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.assertIsNone(os.fsync(dfd))
        finally:
            os.close(dfd)
        self.assertEqual(read_file(p), pattern(100000, 9) + b"more")

    def test_lseek_seek_end_cur_and_set(self):
        p = self.p("seek")
        write_file(p, b"0123456789abcdef")
        fd = os.open(p, os.O_RDWR)
        try:
            self.assertEqual(os.lseek(fd, 0, os.SEEK_END), 16)
            self.assertEqual(os.lseek(fd, -6, os.SEEK_END), 10)
            self.assertEqual(os.read(fd, 3), b"abc")
            self.assertEqual(os.lseek(fd, 0, os.SEEK_CUR), 13)
            self.assertEqual(os.lseek(fd, 2, os.SEEK_SET), 2)
            self.assertEqual(os.read(fd, 2), b"23")
            # SEEK_END sees a size change made through another descriptor
            with open(p, "ab") as f:
                f.write(b"XYZ")
            self.assertEqual(os.lseek(fd, 0, os.SEEK_END), 19)
            with self.assertRaises(OSError) as cm:
                os.lseek(fd, -100, os.SEEK_END)
            self.assertEqual(cm.exception.errno, errno.EINVAL)
        finally:
            os.close(fd)

    def test_fallocate_mode_0_extends_size_reads_zeros_and_allocates_blocks(self):
        p = self.p("falloc")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            free_before = os.statvfs(self.mnt)
            fallocate(fd, 0, 0, 4 * MiB + 100)
            st = os.fstat(fd)
            self.assertEqual(st.st_size, 4 * MiB + 100)
            self.assertGreaterEqual(st.st_blocks, (4 * MiB + 100) // 512)
            self.assertEqual(pread_all(fd, 4 * MiB + 100, 0), bytes(4 * MiB + 100))
            free_after = os.statvfs(self.mnt)
            self.assertLessEqual(free_after.f_bfree * free_after.f_frsize,
                                 free_before.f_bfree * free_before.f_frsize - 4 * MiB,
                                 "fallocated blocks must be reserved in statfs")
            # the preallocated range is writable and keeps what is written
            pwrite_all(fd, b"inside", 3 * MiB)
            self.assertEqual(pread_all(fd, 10, 3 * MiB - 2), bytes(2) + b"inside" + bytes(2))
        finally:
            os.close(fd)

    def test_posix_fallocate_extends_size_and_reads_zeros(self):
        p = self.p("pfalloc")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"abc")
            os.posix_fallocate(fd, 0, 2 * MiB)
            st = os.fstat(fd)
            self.assertEqual(st.st_size, 2 * MiB)
            self.assertGreaterEqual(st.st_blocks, 2 * MiB // 512)
            self.assertEqual(pread_all(fd, 2 * MiB, 0), b"abc" + bytes(2 * MiB - 3))
        finally:
            os.close(fd)

    def test_fallocate_over_existing_data_keeps_it(self):
        p = self.p("falloc2")
        data = pattern(10000, 10)
        write_file(p, data)
        fd = os.open(p, os.O_RDWR)
        try:
            fallocate(fd, 0, 0, 40000)
            self.assertEqual(os.fstat(fd).st_size, 40000)
            self.assertEqual(pread_all(fd, 40000, 0), data + bytes(30000))
            fallocate(fd, 0, 100, 100)           # inside: size unchanged
            self.assertEqual(os.fstat(fd).st_size, 40000)
            self.assertEqual(pread_all(fd, 10000, 0), data)
        finally:
            os.close(fd)

    @pmfuse_only
    def test_collapse_and_insert_range_never_reach_the_daemon(self):
        # the kernel's FUSE client refuses them itself (EOPNOTSUPP): should a
        # kernel ever pass them on, pmfuse must implement them, and this fails
        p = self.p("shift")
        data = pattern(65536, 11)
        write_file(p, data)
        fd = os.open(p, os.O_RDWR)

        def shifts():
            for mode in (0x08, 0x20):           # COLLAPSE_RANGE, INSERT_RANGE
                with self.assertRaises(OSError) as cm:
                    fallocate(fd, mode, 4096, 4096)
                self.assertEqual(cm.exception.errno, errno.EOPNOTSUPP)
        try:
            self.assertEqual(requests_during(self.mnt, "fallocate", shifts), 0)
        finally:
            os.close(fd)
        self.assertEqual(read_file(p), data)

    def extents(self, p):
        raw = os.getxattr(p, "user.pmfuse.extents").decode()
        return {k: int(v) for k, v in (line.split() for line in raw.splitlines())}

    @pmfuse_only
    def test_writes_into_unwritten_blocks_never_show_their_old_bytes(self):
        # ZERO_RANGE frees the range and reserves blocks again, unwritten:
        # the same blocks, still holding "A"s.  Partial writes into them must
        # bring zeros around them, in the page cache and in the region.
        p = self.p("reuse")
        write_file(p, b"A" * (96 * KiB), fsync=True)
        fd = os.open(p, os.O_RDWR)
        try:
            fallocate(fd, 0x10, 8192, 90000 - 8192)	# FALLOC_FL_ZERO_RANGE
            self.assertEqual(self.extents(p)["unwritten_blocks"], 19)	# blocks 2..20
            pwrite_all(fd, b"x" * 3000, 20000)
            pwrite_all(fd, b"y" * 9000, 70000)
            os.fsync(fd)	# the writeback cache's pages reach the region
            self.assertEqual(self.extents(p)["unwritten_blocks"], 19 - 2 - 3)
            os.fsync(fd)
        finally:
            os.close(fd)
        want = bytearray(b"A" * (96 * KiB))
        want[8192:90000] = bytes(90000 - 8192)
        want[20000:23000] = b"x" * 3000
        want[70000:79000] = b"y" * 9000
        self.assertEqual(read_file(p), bytes(want))
        self.remount()
        self.assertEqual(read_file(p), bytes(want))

    def test_copy_file_range_from_unwritten_blocks_copies_zeros(self):
        src, dst = self.p("cfr-src"), self.p("cfr-dst")
        fd = os.open(src, os.O_RDWR | os.O_CREAT, 0o644)
        out = os.open(dst, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fallocate(fd, 0, 0, MiB)
            pwrite_all(fd, b"written", 300000)
            pwrite_all(out, b"D" * MiB, 0)		# old data the copy must replace
            done = 0
            while done < MiB:
                n = os.copy_file_range(fd, out, MiB - done, done, done)
                self.assertGreater(n, 0)
                done += n
            want = bytes(300000) + b"written" + bytes(MiB - 300007)
            self.assertEqual(pread_all(out, MiB, 0), want)
            self.assertEqual(pread_all(fd, MiB, 0), want)
        finally:
            os.close(fd)
            os.close(out)

    def test_keep_size_preallocation_past_eof_then_writes_extend_the_file(self):
        p = self.p("keep")
        write_file(p, b"head")
        fd = os.open(p, os.O_RDWR)
        try:
            fallocate(fd, 0x01, 0, 4 * MiB)		# FALLOC_FL_KEEP_SIZE
            st = os.fstat(fd)
            self.assertEqual(st.st_size, 4)
            self.assertGreaterEqual(st.st_blocks * 512, 4 * MiB)
            self.assertEqual(os.lseek(fd, 0, os.SEEK_END), 4)
            pwrite_all(fd, b"tail", 3 * MiB)
            self.assertEqual(os.fstat(fd).st_size, 3 * MiB + 4)
            self.assertEqual(pread_all(fd, 3 * MiB + 4, 0),
                             b"head" + bytes(3 * MiB - 4) + b"tail")
            # growing by truncate shows zeros from the unwritten blocks too
            os.ftruncate(fd, 4 * MiB)
            self.assertEqual(pread_all(fd, MiB - 4, 3 * MiB + 4), bytes(MiB - 4))
        finally:
            os.close(fd)
        self.remount()
        self.assertEqual(read_file(p), b"head" + bytes(3 * MiB - 4) + b"tail" + bytes(MiB - 4))

    @pmfuse_only
    def test_punch_and_truncate_give_unwritten_blocks_back(self):
        p = self.p("give-back")
        before = os.statvfs(self.mnt).f_bfree
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fallocate(fd, 0, 0, 8 * MiB)
            pwrite_all(fd, b"z" * 10000, MiB + 5)
            os.fsync(fd)	# the writeback cache's pages reach the region
            fallocate(fd, 0x03, 2 * MiB, 2 * MiB)	# PUNCH_HOLE | KEEP_SIZE
            e = self.extents(p)
            self.assertEqual(e["unwritten_blocks"], 6 * MiB // 4096 - 3, e)
            self.assertEqual(os.fstat(fd).st_blocks * 512, 6 * MiB)
            self.assertEqual(pread_all(fd, 3 * MiB, MiB),
                             bytes(5) + b"z" * 10000 + bytes(3 * MiB - 10005))
            os.ftruncate(fd, MiB + 4096)
            e = self.extents(p)
            self.assertEqual(e["unwritten_blocks"], MiB // 4096, e)
            self.assertEqual(pread_all(fd, 4096, MiB), bytes(5) + b"z" * 4091)
        finally:
            os.close(fd)
        os.unlink(p)
        self.assertTrue(wait_until(lambda: os.statvfs(self.mnt).f_bfree >= before, 5),
                        "unwritten blocks not given back")

    def test_statvfs_free_blocks_drop_after_write_and_return_after_unlink(self):
        before = os.statvfs(self.mnt)
        self.assertGreater(before.f_blocks, 0)
        self.assertGreaterEqual(before.f_blocks, before.f_bfree)
        self.assertGreaterEqual(before.f_bfree, before.f_bavail)
        fr = before.f_frsize
        p = self.p("eight-mib")
        write_file(p, pattern(8 * MiB, 11), fsync=True)
        mid = os.statvfs(self.mnt)
        dropped = (before.f_bfree - mid.f_bfree) * fr
        self.assertGreaterEqual(dropped, 8 * MiB, "writing 8 MiB must consume 8 MiB of free space")
        self.assertLessEqual(dropped, 10 * MiB, "writing 8 MiB consumed %d bytes" % dropped)
        self.assertLessEqual(mid.f_bavail, before.f_bavail - 8 * MiB // fr)
        self.assertEqual(mid.f_blocks, before.f_blocks)
        os.unlink(p)
        ok = wait_until(lambda: os.statvfs(self.mnt).f_bfree >= before.f_bfree, 5)
        self.assertTrue(ok, "space not returned after unlink: bfree %d, was %d"
                        % (os.statvfs(self.mnt).f_bfree, before.f_bfree))

    def test_statvfs_reports_sane_geometry(self):
        st = os.statvfs(self.mnt)
        self.assertGreater(st.f_bsize, 0)
        self.assertGreater(st.f_frsize, 0)
        total = st.f_blocks * st.f_frsize
        self.assertLessEqual(total, 256 * MiB, "more space than the region")
        self.assertGreater(total, 128 * MiB, "a 256 MiB region should offer > 128 MiB")
        self.assertGreater(st.f_files, 0)
        self.assertLessEqual(st.f_ffree, st.f_files)

    def test_unlinked_open_file_stays_readable_until_close_then_space_returns(self):
        before = os.statvfs(self.mnt).f_bfree
        p = self.p("ghost")
        data = pattern(4 * MiB, 12)
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        closed = False
        try:
            pwrite_all(fd, data, 0)
            os.fsync(fd)
            os.unlink(p)
            with self.assertRaises(OSError) as cm:
                os.stat(p)
            self.assertEqual(cm.exception.errno, errno.ENOENT)
            self.assertNotIn("ghost", os.listdir(self.mnt))
            st = os.fstat(fd)
            self.assertEqual(st.st_nlink, 0)
            self.assertEqual(st.st_size, 4 * MiB)
            self.assertEqual(pread_all(fd, 4 * MiB, 0), data)
            # still writable, and its blocks still in use
            pwrite_all(fd, b"still here", 100)
            self.assertEqual(pread_all(fd, 10, 100), b"still here")
            still_used = os.statvfs(self.mnt).f_bfree
            self.assertLessEqual(still_used, before - 4 * MiB // os.statvfs(self.mnt).f_frsize,
                                 "an open unlinked file's blocks must stay allocated")
            os.close(fd)
            closed = True
        finally:
            if not closed:
                os.close(fd)
        ok = wait_until(lambda: os.statvfs(self.mnt).f_bfree >= before, 5)
        self.assertTrue(ok, "space of the unlinked file not returned after close: bfree %d, was %d"
                        % (os.statvfs(self.mnt).f_bfree, before))

    def test_shared_mmap_writes_reach_the_file(self):
        p = self.p("mapped")
        write_file(p, bytes(3 * 4096))
        with open(p, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 3 * 4096)
            try:
                mm[4090:4106] = b"across-the-page!"
                mm.flush()
            finally:
                mm.close()
        want = bytes(4090) + b"across-the-page!" + bytes(3 * 4096 - 4106)
        self.assertEqual(read_file(p), want)
        self.remount()
        self.assertEqual(read_file(p), want)

    def test_many_small_files_keep_their_own_content(self):
        os.mkdir(self.p("many"))
        for i in range(300):
            write_file(self.p("many", "f%03d" % i), struct.pack("<I", i) * (i + 1))
        self.remount()
        for i in range(300):
            self.assertEqual(read_file(self.p("many", "f%03d" % i)), struct.pack("<I", i) * (i + 1))


def aligned(data):
    """data in a page-aligned buffer, as O_DIRECT wants it (ext4 reference)."""
    buf = mmap.mmap(-1, (len(data) + 4095) // 4096 * 4096)
    buf[:len(data)] = data
    return buf


def direct_pwrite(path, data, offset, flags=0):
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | flags)
    try:
        buf = aligned(data)
        try:
            return os.pwritev(fd, [memoryview(buf)[:len(data)]], offset)
        finally:
            buf.close()
    finally:
        os.close(fd)


class DirectIoTest(PmfuseTestCase):
    """Files opened O_DIRECT take the kernel's direct path (FOPEN_DIRECT_IO):
    data goes straight to the daemon, and what the page-cache path did around
    a write -- invalidate other opens' cached pages, drop set-id bits and
    file capabilities -- the daemon does (test_attr checks the last two)."""

    def test_direct_writes_and_reads_round_trip(self):
        p = self.p("direct")
        want = pattern(3 * MiB + 8192, 1)
        write_file(p, b"")
        for off in range(0, len(want), MiB):
            self.assertEqual(direct_pwrite(p, want[off:off + MiB], off), len(want[off:off + MiB]))
        fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = aligned(bytes(len(want)))
            n = os.preadv(fd, [buf], 0)
            self.assertEqual(n, len(want))
            self.assertEqual(buf[:n], want)
            buf.close()
        finally:
            os.close(fd)
        self.assertEqual(read_file(p), want)
        self.remount()
        self.assertEqual(read_file(p), want)

    @contextlib.contextmanager
    def cached_and_mapped(self, name, size):
        """A file of size b"a"s, read whole by one descriptor (its pages now
        cached) and mapped shared through another, every page faulted in:
        yields (the cached descriptor, the mapping)."""
        p = self.p(name)
        write_file(p, b"a" * size)
        with open(p, "rb", buffering=0) as cached, open(p, "r+b") as mf:
            self.assertEqual(os.pread(cached.fileno(), size, 0), b"a" * size)
            mm = mmap.mmap(mf.fileno(), size)
            try:
                self.assertEqual(mm[:], b"a" * size)
                yield cached.fileno(), mm
            finally:
                mm.close()

    def test_direct_write_is_seen_by_a_cached_reader_and_a_shared_mapping(self):
        with self.cached_and_mapped("coherent", 16384) as (cached, mm):
            direct_pwrite(self.p("coherent"), b"b" * 8192, 4096)
            # the mapping first: no request of its own would refresh it
            self.assertEqual(mm[:], b"a" * 4096 + b"b" * 8192 + b"a" * 4096)
            self.assertEqual(os.pread(cached, 16384, 0),
                             b"a" * 4096 + b"b" * 8192 + b"a" * 4096)

    @pmfuse_only
    def test_neither_path_asks_for_security_capability_before_each_write(self):
        # the page-cache path asked before every write until the daemon took
        # set-id dropping over (HANDLE_KILLPRIV_V2); the direct path never does
        p = self.p("f")
        write_file(p, bytes(65536))

        def direct_writes():
            for i in range(8):
                direct_pwrite(p, b"d" * 4096, i * 4096)

        def cached_writes():
            fd = os.open(p, os.O_RDWR)     # write-only opens go direct too
            try:
                for i in range(16):
                    os.pwrite(fd, b"c" * 4096, (i % 8) * 4096)
            finally:
                os.close(fd)
        direct_ones = requests_during(self.mnt, "getxattr", direct_writes)
        cached_ones = requests_during(self.mnt, "getxattr", cached_writes)
        self.assertEqual(direct_ones, 0, "O_DIRECT writes were preceded by GETXATTR")
        self.assertLessEqual(cached_ones, 2, "buffered writes were preceded by GETXATTR")
        self.assertEqual(read_file(p), b"c" * 32768 + bytes(32768))

    def test_an_o_direct_descriptor_maps_shared_and_both_views_agree(self):
        # databases and fsx open O_DIRECT and map the same descriptor
        p = self.p("mapped")
        write_file(p, b"a" * 16384)
        fd = os.open(p, os.O_RDWR | os.O_DIRECT)
        try:
            mm = mmap.mmap(fd, 16384)
            try:
                self.assertEqual(mm[:4], b"aaaa")
                buf = aligned(b"b" * 4096)
                self.assertEqual(os.pwritev(fd, [buf], 4096), 4096)
                self.assertEqual(mm[4090:4100], b"aaaaaabbbb", "a direct write is seen by the map")
                mm[8192:8196] = b"map1"
                rbuf = aligned(bytes(4096))
                self.assertEqual(os.preadv(fd, [rbuf], 8192), 4096)
                self.assertEqual(rbuf[:6], b"map1aa", "a direct read sees the map's stores")
                mm[12288:12292] = b"map2"
                mm.flush()
            finally:
                mm.close()
            # a private mapping of the same descriptor, and its copy-on-write
            pm = mmap.mmap(fd, 16384, flags=mmap.MAP_PRIVATE)
            try:
                self.assertEqual(pm[12288:12292], b"map2")
                pm[0:4] = b"priv"
            finally:
                pm.close()
        finally:
            os.close(fd)
        want = b"a" * 4096 + b"b" * 4096 + b"map1" + b"a" * 4092 + b"map2" + b"a" * 4092
        self.assertEqual(read_file(p), want)
        self.remount()
        self.assertEqual(read_file(p), want)

    def direct_opens(self):
        return 0 if REFERENCE else fs_stats(self.mnt)["opens_write_only_direct"]

    def test_write_only_writes_are_seen_by_cached_readers_and_maps_and_keep_their_stores(self):
        p = self.p("wo")
        with self.cached_and_mapped("wo", 32768) as (cached, mm):
            mm[20480:20484] = b"map!"             # a dirty page, not yet written back
            mm[8190:8194] = b"MMMM"               # a dirty page the write will overlap
            before = self.direct_opens()
            fd = os.open(p, os.O_WRONLY)
            try:
                self.assertEqual(os.pwrite(fd, b"w" * 5000, 4106), 5000)  # unaligned, 3 pages
                self.assertEqual(os.fstat(fd).st_size, 32768)
            finally:
                os.close(fd)
            if not REFERENCE:
                self.assertEqual(self.direct_opens(), before + 1)
            want = bytearray(b"a" * 32768)
            want[8190:8194] = b"MMMM"
            want[4106:9106] = b"w" * 5000         # the later write wins where they overlap
            want[20480:20484] = b"map!"
            self.assertEqual(mm[:], bytes(want), "the mapping sees the write")
            self.assertEqual(os.pread(cached, 32768, 0), bytes(want),
                             "a cached reader sees the write and the map's stores")
        self.assertEqual(read_file(p), bytes(want))
        self.remount()
        self.assertEqual(read_file(p), bytes(want))

    def test_write_only_appends_extend_the_file_for_every_descriptor(self):
        p = self.p("log")
        write_file(p, b"")
        with open(p, "rb", buffering=0) as reader:
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            try:
                for i in range(64):
                    os.write(fd, b"%05d\n" % i)
                self.assertEqual(os.fstat(reader.fileno()).st_size, 64 * 6)
                self.assertEqual(reader.read(), b"".join(b"%05d\n" % i for i in range(64)))
                os.fsync(fd)
            finally:
                os.close(fd)
        self.remount()
        self.assertEqual(read_file(p), b"".join(b"%05d\n" % i for i in range(64)))

    @pmfuse_only
    def test_only_write_only_opens_go_direct_and_not_with_the_writeback_cache(self):
        p = self.p("f")
        before = self.direct_opens()
        write_file(p, pattern(70000, 3))                     # O_WRONLY|O_CREAT|O_TRUNC
        with open(p, "r+b") as f:                            # O_RDWR: the page cache
            f.write(b"rw")
        with open(p, "rb") as f:
            self.assertEqual(f.read(2), b"rw")
        self.assertEqual(self.direct_opens(), before + 1)
        self.assertEqual(read_file(p), b"rw" + pattern(70000, 3)[2:])
        self.unmount()
        self.m = self.mount(opts=["writeback_cache"])
        write_file(p, pattern(70000, 4))
        self.assertEqual(self.direct_opens(), 0, "a write-only open skipped the writeback cache")
        self.assertEqual(read_file(p), pattern(70000, 4))
        self.unmount()
        self.m = self.mount(opts=["nodirect_io"])
        write_file(p, pattern(70000, 5))
        self.assertEqual(self.direct_opens(), 0)
        self.assertEqual(read_file(p), pattern(70000, 5))

    @pmfuse_only
    def test_nodirect_io_keeps_o_direct_on_the_page_cache_path(self):
        self.unmount()
        self.m = self.mount(opts=["nodirect_io"])
        p = self.p("f")
        write_file(p, bytes(8192))
        fd = os.open(p, os.O_RDWR | os.O_DIRECT)
        try:
            mm = mmap.mmap(fd, 8192)
            mm[0:4] = b"map!"
            mm.flush()
            mm.close()
        finally:
            os.close(fd)
        self.assertEqual(read_file(p)[:4], b"map!")


class DirtyLimitTest(PmfuseTestCase):
    """The mount's dirty-page limit (/sys/class/bdi/0:N): FUSE's strict 1%,
    or with -o fs_dirty_limit a kernel filesystem's; data written through
    the writeback cache past FUSE's limit reads back."""

    def bdi(self):
        st = os.stat(self.mnt)
        d = "/sys/class/bdi/%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev))
        if os.geteuid() != 0 or not os.path.exists(os.path.join(d, "strict_limit")):
            self.skipTest("needs root and a kernel with bdi strict_limit (6.2)")
        return tuple(int(open(os.path.join(d, f)).read()) for f in ("max_ratio", "strict_limit"))

    @pmfuse_only
    def test_fs_dirty_limit_gives_the_mount_a_kernel_filesystems_dirty_limit(self):
        self.assertEqual(self.bdi(), (1, 1), "the default is the kernel's for FUSE")
        self.unmount()
        self.m = self.mount(opts=["fs_dirty_limit"])
        self.assertEqual(self.bdi(), (100, 0))

    @pmfuse_only
    def test_writeback_cache_writes_past_the_fuse_limit_read_back(self):
        self.unmount()
        self.m = self.mount(opts=["writeback_cache", "fs_dirty_limit"])
        self.assertEqual(self.bdi(), (100, 0))
        p = self.p("f")
        want = bytearray(pattern(48 << 20, 7))
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            pwrite_all(fd, bytes(want), 0)
            for i in range(4096):                       # 4 KiB pages, scattered
                off = (i * 7919 % 12288) * 4096
                page = pattern(4096, i + 100)
                os.pwrite(fd, page, off)
                want[off:off + 4096] = page
            os.fsync(fd)
        finally:
            os.close(fd)
        self.remount()
        self.assertEqual(sha256_file(p), sha256_bytes(bytes(want)))


class DirectIoMountTest(PmfuseTestCase):
    """-o direct_io: every open skips the kernel's page cache (what a file
    server exporting the mount wants); reads, writes and maps still agree."""
    mount_opts = ("direct_io",)

    @pmfuse_only
    def test_every_open_is_direct_and_the_data_round_trips(self):
        before = fs_stats(self.mnt)["opens_direct"]
        p = self.p("f")
        want = bytearray(pattern(2 * MiB + 777, 3))
        with open(p, "wb") as f:                 # buffered, unaligned writes
            for off in range(0, len(want), 100000):
                f.write(want[off:off + 100000])
        fd = os.open(p, os.O_RDWR)
        try:
            self.assertEqual(os.pwrite(fd, b"xyz", 5), 3)
            want[5:8] = b"xyz"
            self.assertEqual(os.pread(fd, 20, 0), bytes(want[:20]))
            mm = mmap.mmap(fd, 8192)             # maps still work, coherent
            try:
                self.assertEqual(mm[5:8], b"xyz")
                mm[100:104] = b"MAP!"
                want[100:104] = b"MAP!"
                self.assertEqual(os.pread(fd, 4, 100), b"MAP!")
                os.pwrite(fd, b"WRT", 200)
                want[200:203] = b"WRT"
                self.assertEqual(mm[200:203], b"WRT")
            finally:
                mm.close()
        finally:
            os.close(fd)
        self.assertEqual(read_file(p), bytes(want))
        # the binary open, this one and read_file's
        self.assertGreaterEqual(fs_stats(self.mnt)["opens_direct"] - before, 3)
        self.remount()
        self.assertEqual(read_file(p), bytes(want))

    @pmfuse_only
    def test_direct_io_refuses_options_that_need_the_page_cache(self):
        for other in ("writeback_cache", "nodirect_io"):
            r = run([DAEMON, self.region, self.mnt, "-f", "-o", "direct_io," + other],
                    timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("-o direct_io excludes -o " + other, r.stderr)


class EnospcTest(PmfuseTestCase):
    region_size = "64M"

    def test_enospc_when_full_then_unlink_makes_writes_work_again(self):
        st0 = os.statvfs(self.mnt)
        free0 = st0.f_bavail * st0.f_frsize
        self.assertGreater(free0, 4 * MiB)
        chunk = pattern(MiB, 13)
        p = self.p("filler")
        written = 0
        got_enospc = False
        fsync_failed = False
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for _ in range(64 + 16):
                try:
                    n = os.write(fd, chunk)
                except OSError as e:
                    self.assertEqual(e.errno, errno.ENOSPC, "write failed with %s" % e)
                    got_enospc = True
                    break
                written += n
                if n < len(chunk):          # short write at the end of space
                    continue
            try:
                os.fsync(fd)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC, "fsync failed with %s" % e)
                got_enospc = fsync_failed = True
        finally:
            try:
                os.close(fd)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
        self.assertTrue(got_enospc, "wrote %d bytes to a 64 MiB region without ENOSPC" % written)
        self.assertGreaterEqual(written, int(free0 * 0.9),
                                "statfs promised %d free bytes but only %d could be written"
                                % (free0, written))
        full = os.statvfs(self.mnt)
        self.assertLess(full.f_bavail * full.f_frsize, MiB)
        if not fsync_failed:
            fd = os.open(p, os.O_RDONLY)
            try:
                good = written - written % MiB
                for i in range(0, good, MiB):
                    self.assertEqual(pread_all(fd, MiB, i), chunk, "chunk at %d" % i)
            finally:
                os.close(fd)
        # a new file cannot take data either
        with self.assertRaises(OSError) as cm:
            fd = os.open(self.p("more"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, chunk)
                os.write(fd, chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.assertEqual(cm.exception.errno, errno.ENOSPC)
        if os.path.lexists(self.p("more")):
            os.unlink(self.p("more"))
        os.unlink(p)
        ok = wait_until(lambda: os.statvfs(self.mnt).f_bavail >= st0.f_bavail, 5)
        self.assertTrue(ok, "space not returned: bavail %d, was %d"
                        % (os.statvfs(self.mnt).f_bavail, st0.f_bavail))
        data = pattern(4 * MiB, 14)
        write_file(self.p("after"), data, fsync=True)
        self.assertEqual(read_file(self.p("after")), data)
        self.remount()
        self.assertEqual(read_file(self.p("after")), data)


class LargeFileTest(PmfuseTestCase):
    region_size = "2G"
    test_timeout = 600

    @staticmethod
    def _chunk(base, i):
        # 1 MiB chunk i: random base with every 4 KiB block stamped with its
        # global block number, so a misplaced block is detected
        b = bytearray(base)
        for blk in range(256):
            struct.pack_into("<QQ", b, blk * 4096, i * 256 + blk, 0x706d66757365)
        return bytes(b)

    def test_one_gib_file_written_sequentially_reads_back_and_persists(self):
        base = pattern(MiB, 15)
        n = 1024
        p = self.p("gig")
        t0 = time.monotonic()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for i in range(n):
                pwrite_all(fd, self._chunk(base, i), i * MiB)
            os.fsync(fd)
        finally:
            os.close(fd)
        t_write = time.monotonic() - t0
        self.assertEqual(os.stat(p).st_size, GiB)
        self.assertGreaterEqual(os.stat(p).st_blocks, GiB // 512)

        def verify():
            fd = os.open(p, os.O_RDONLY)
            try:
                for i in range(n):
                    got = pread_all(fd, MiB, i * MiB)
                    if got != self._chunk(base, i):
                        self.fail("1 MiB chunk %d differs" % i)
            finally:
                os.close(fd)
        verify()
        self.remount()
        verify()
        sys.stderr.write("[1 GiB sequential write: %.1fs] " % t_write)


if __name__ == "__main__":
    main()
