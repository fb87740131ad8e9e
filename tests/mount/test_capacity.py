#!/usr/bin/env python3
"""pmfuse mount tests: capacity.

Format 2 has no data/metadata split fixed at mkfs: data lives in pieces the
daemon adds to the heap on demand and gives back when they empty.  These
tests check what a user sees of that: statfs of 1 TiB and 4 TiB sparse
regions (never more than a few hundred MiB written), mkfs -n printing what
the mount reports, a region filled by small files and then by one file,
metadata created when data is full, and a region made by the previous
release (format 1, format 2) mounting with its files intact and upgraded in place.
"""
import errno
import lzma
import os
import re
import shutil
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (FSCK_OK, REPO, Mount, fs_stats, fsck, main, mkfs, sha256_file,  # noqa: E402
                     wait_until)
from test_badimage import RegionTestCase  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


def write_until_enospc(path, chunk, limit):
    """Append chunk to path until ENOSPC; the bytes written."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while n < limit:
            try:
                w = os.write(fd, chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            n += w
            if w < len(chunk):
                break
    finally:
        os.close(fd)
    return n


class CheckedRegionCase(RegionTestCase):

    def assertClean(self, region):
        rc, out = fsck(region, "-n")
        self.assertEqual(rc, FSCK_OK, out[-3000:])


class CapacityTest(CheckedRegionCase):

    def dry_capacity(self, region):
        r = mkfs(region, "-n", "-f")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"capacity (\d+) blocks", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        return int(m.group(1))

    def check_sparse(self, size):
        region = self.region_path("big")
        with open(region, "wb") as f:
            f.truncate(size)
        want = self.dry_capacity(region)
        r = mkfs(region, "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        # a mount still walks the whole inode table (ASan, a loaded machine)
        m = Mount(region, self.mountpoint(), log_dir=self.workdir)
        self.mounts.append(m)
        m.start(timeout=120)
        st = os.statvfs(m.mnt)
        # mkfs -n said exactly what the mount reports, and it is the region
        self.assertEqual(st.f_blocks, want)
        self.assertGreaterEqual(st.f_blocks * st.f_frsize, 0.97 * size)
        self.assertGreaterEqual(st.f_bfree, 0.97 * st.f_blocks)
        s0 = fs_stats(m.mnt)
        # more than run 0 holds: the data area grows by a piece, and shrinks back
        path = os.path.join(m.mnt, "f")
        data = os.urandom(MiB)
        length = s0["data_area_blocks"] * 4096 + 16 * MiB
        self.assertLess(length, 256 * MiB, "run 0 is small: growth is on demand")
        with open(path, "wb") as f:
            for i in range(length // MiB):
                f.write(data)
            os.fsync(f.fileno())
        s1 = fs_stats(m.mnt)
        self.assertGreaterEqual(s1["pieces_added"], 1, s1)
        self.assertGreater(s1["data_area_blocks"], s0["data_area_blocks"])
        with open(path, "rb") as f:
            f.seek(length - MiB)
            self.assertEqual(f.read(), data)
        used = st.f_bfree - os.statvfs(m.mnt).f_bfree
        self.assertGreaterEqual(used, length // 4096)
        os.unlink(path)
        # the kernel's RELEASE and FORGET come after unlink returns
        wait_until(lambda: fs_stats(m.mnt)["pieces_removed"] == s1["pieces_added"], 10)
        s2 = fs_stats(m.mnt)
        self.assertEqual(s2["pieces_removed"], s1["pieces_added"], s2)
        self.assertEqual(s2["data_area_blocks"], s0["data_area_blocks"])
        self.assertEqual(os.statvfs(m.mnt).f_bfree, st.f_bfree)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)

    def test_one_tib_sparse_region(self):
        self.check_sparse(TiB)

    def test_four_tib_sparse_region(self):
        self.check_sparse(4 * TiB)

    def test_mkfs_dry_run_prints_what_the_mount_reports(self):
        for size in (64 * MiB, 300 * MiB, GiB + 12345 * 4096):
            region = self.region_path("dry")
            with open(region, "wb") as f:
                f.truncate(size)
            want = self.dry_capacity(region)
            self.assertEqual(mkfs(region, "-q").returncode, 0)
            m = self.mount(region)
            self.assertEqual(os.statvfs(m.mnt).f_blocks, want, size)
            self.assertEqual(m.unmount(), 0)

    def test_one_block_files_run_out_of_blocks_before_inodes(self):
        # the default inode count never binds before space for files with data
        region = self.formatted("64M")
        m = self.mount(region)
        n = 0
        while True:
            try:
                with open(os.path.join(m.mnt, "f%06d" % n), "wb") as f:
                    f.write(b"b" * 4096)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
                break
            n += 1
        st = os.statvfs(m.mnt)
        # space ran out (the inodes and names of so many small files take a
        # share of it too), not the inode count: 75% of them used (12350
        # files, 2026-12-07)
        self.assertGreater(st.f_ffree, st.f_files // 10, "inodes ran out, after %d files" % n)
        # (the old default, one inode per 16 KiB, stopped at 4096 files: 25%;
        # before data growth left the heap what metadata would need beside
        # it, inodes had no room left while the data piece had: 62%; now 75%)
        self.assertGreaterEqual(n * 4096, 0.7 * 64 * MiB, "only %d files" % n)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)

    def test_empty_files_run_out_of_space_before_inodes(self):
        # format 5: the inode count is a ceiling (one per 256 bytes) that an
        # empty file's metadata never lets bind; mkfs wrote none of it
        region = self.formatted("32M")
        m = self.mount(region)
        st0 = os.statvfs(m.mnt)
        self.assertGreaterEqual(st0.f_files, 32 * MiB // 256 - 1)
        d = os.path.join(m.mnt, "d")
        os.mkdir(d)
        n = 0
        while True:
            try:
                os.close(os.open(os.path.join(d, "e%06d" % n), os.O_CREAT | os.O_WRONLY, 0o644))
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
                break
            n += 1
        st = os.statvfs(m.mnt)
        self.assertGreater(st.f_ffree, 0, "inodes ran out, after %d files" % n)
        # (4096 bytes per inode, the format 4 default, stopped at 8191 files)
        self.assertGreater(n, 32 * MiB // 1024, "only %d empty files" % n)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)
        m = self.mount(region)
        self.assertEqual(len(os.listdir(os.path.join(m.mnt, "d"))), n)
        for i in range(0, n, max(1, n // 50)):
            os.unlink(os.path.join(m.mnt, "d", "e%06d" % i))
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)
        # format 6: deleting them gives their inode chunks back, and one
        # file takes the space (format 5 kept 16.8 MiB of empty chunks, and
        # one file then got 1 MiB).  Remounted first: libpmemobj 1.12 merges
        # the small blocks freed into one run only as its heap is opened
        # (in the same mount one file got 10 MiB, 2026-12-08)
        m = self.mount(region)
        shutil.rmtree(os.path.join(m.mnt, "d"))
        # (the directory's table goes when the kernel forgets it)
        self.assertTrue(wait_until(lambda: fs_stats(m.mnt)["inode_chunks"] <= 2 and
                                   fs_stats(m.mnt)["metadata_bytes"] < MiB, 30),
                        fs_stats(m.mnt))
        self.assertEqual(m.unmount(), 0)
        m = self.mount(region)
        one = write_until_enospc(os.path.join(m.mnt, "one"), b"o" * MiB, GiB)
        self.assertGreaterEqual(one, 0.9 * st0.f_blocks * st0.f_frsize, "one file: %d" % one)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)

    def test_deleted_files_give_their_inode_chunks_back(self):
        region = self.formatted("32M")
        m = self.mount(region)
        s0 = fs_stats(m.mnt)
        self.assertEqual(s0["inode_chunks"], 1)    # the root's
        d = os.path.join(m.mnt, "d")
        os.mkdir(d)
        for i in range(20 * 64):
            os.close(os.open(os.path.join(d, "e%04d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
        s1 = fs_stats(m.mnt)
        self.assertGreaterEqual(s1["inode_chunks"], 20)
        first = {os.stat(os.path.join(d, "e%04d" % i)).st_ino for i in range(64)}
        shutil.rmtree(d)
        # the kernel's FORGETs (which free the inodes) come after rmdir returns
        self.assertTrue(wait_until(lambda: fs_stats(m.mnt)["inode_chunks"] == 2, 30))
        s2 = fs_stats(m.mnt)
        # all but the root's chunk and one kept spare went back to the heap
        self.assertEqual(s2["inode_chunks_freed"], s1["inode_chunks"] - 2, s2)
        # the spare (16 KiB) and the root's first directory chunk (4 KiB)
        # stay; the other 18 chunks took 288 KiB
        self.assertLessEqual(s2["metadata_bytes"], s0["metadata_bytes"] + 24 * 1024,
                             (s0["metadata_bytes"], s2["metadata_bytes"]))
        self.assertEqual(s2["inodes_free"], s0["inodes_free"])
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)
        m = self.mount(region)
        self.assertEqual(fs_stats(m.mnt)["inode_chunks"], 2)
        # new files take the lowest numbers again, in the chunks made anew
        for i in range(3 * 64):
            open(os.path.join(m.mnt, "n%03d" % i), "w").close()
        inos = {os.stat(os.path.join(m.mnt, "n%03d" % i)).st_ino for i in range(3 * 64)}
        self.assertLess(max(inos), 4 * 64)
        self.assertTrue(first & inos)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)

    def test_small_files_then_one_file_fill_the_region(self):
        size = GiB
        region = self.formatted("1G")
        m = self.mount(region)
        d = m.mnt
        chunk = b"s" * (64 << 10)
        n = 0
        while True:
            try:
                with open(os.path.join(d, "f%06d" % n), "wb") as f:
                    f.write(chunk)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
                break
            n += 1
        self.assertGreaterEqual(n * len(chunk), 0.95 * size, "small files filled %d" % n)
        # full of data, metadata still has room: new names, renames
        for i in range(200):
            open(os.path.join(d, "empty%d" % i), "w").close()
        os.rename(os.path.join(d, "empty0"), os.path.join(d, "renamed"))
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)
        m = self.mount(region)
        d = m.mnt
        with open(os.path.join(d, "f%06d" % (n - 1)), "rb") as f:
            self.assertEqual(f.read(), chunk)
        for i in range(n):
            os.unlink(os.path.join(d, "f%06d" % i))
        # the kernel's FORGETs (which free the blocks) come after unlink returns
        wait_until(lambda: fs_stats(d)["data_pieces"] == 1, 30)
        s = fs_stats(d)
        self.assertGreater(s["pieces_removed"], 0, s)
        self.assertEqual(s["data_pieces"], 1, s)
        one = write_until_enospc(os.path.join(d, "one"), b"o" * MiB, 2 * size)
        self.assertGreaterEqual(one, 0.97 * size, "one file after the small ones: %d" % one)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)
        m = self.mount(region)
        d = m.mnt
        self.assertEqual(os.stat(os.path.join(d, "one")).st_size, one)
        with open(os.path.join(d, "one"), "rb") as f:
            f.seek(one - MiB)
            self.assertEqual(f.read(), b"o" * MiB)
        os.unlink(os.path.join(d, "one"))
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)

    def test_metadata_fills_what_data_gave_back(self):
        """A region filled with one file, emptied, then filled with names."""
        region = self.formatted("128M")
        m = self.mount(region)
        d = m.mnt
        one = write_until_enospc(os.path.join(d, "one"), b"o" * MiB, GiB)
        self.assertGreater(one, 100 * MiB)
        os.unlink(os.path.join(d, "one"))
        wait_until(lambda: fs_stats(d)["data_pieces"] == 1, 30)
        self.assertEqual(fs_stats(d)["data_pieces"], 1)
        # far more metadata than the reserve (2 MiB) holds: big xattrs
        sub = os.path.join(d, "meta")
        os.mkdir(sub)
        value = b"x" * 60000
        n = 0
        try:
            while n < 5000:
                p = os.path.join(sub, "f%05d" % n)
                open(p, "w").close()
                os.setxattr(p, "user.big", value)
                n += 1
        except OSError as e:
            self.assertEqual(e.errno, errno.ENOSPC)
        # more than half the region went to metadata the data gave back
        self.assertGreater(n * len(value), 64 * MiB, n)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)
        m = self.mount(region)
        shutil.rmtree(os.path.join(m.mnt, "meta"))
        wait_until(lambda: fs_stats(m.mnt)["metadata_bytes"] < 8 * MiB, 30)
        # and data takes the space back
        one = write_until_enospc(os.path.join(m.mnt, "one"), b"o" * MiB, GiB)
        self.assertGreater(one, 100 * MiB)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)


class UnwrittenTest(CheckedRegionCase):
    """fallocate reserves unwritten extents: nothing is stored in the region
    until a write, which persists its block before marking it written."""

    def test_fallocate_8gib_writes_nothing_and_reads_zeros(self):
        region = self.region_path("unwritten")
        with open(region, "wb") as f:
            f.truncate(16 * GiB)
        self.assertEqual(mkfs(region, "-q").returncode, 0)
        m = Mount(region, self.mountpoint(), log_dir=self.workdir)
        self.mounts.append(m)
        m.start(timeout=120)
        st0 = os.statvfs(m.mnt)
        disk0 = os.stat(region).st_blocks * 512
        path = os.path.join(m.mnt, "vm.img")
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.posix_fallocate(fd, 0, 8 * GiB)
            self.assertEqual(os.fstat(fd).st_size, 8 * GiB)
            self.assertGreaterEqual(os.fstat(fd).st_blocks * 512, 8 * GiB)
            # the space is taken ...
            st1 = os.statvfs(m.mnt)
            self.assertGreaterEqual((st0.f_bfree - st1.f_bfree) * st1.f_frsize, 8 * GiB)
            # ... but nothing was written to the region: no 8 GiB of zeros
            grown = os.stat(region).st_blocks * 512 - disk0
            self.assertLess(grown, 64 * MiB, "fallocate stored %d bytes" % grown)
            e = os.getxattr(path, "user.pmfuse.extents").decode()
            self.assertIn("unwritten_blocks %d\n" % (8 * GiB // 4096), e)
            for off in (0, 3 * GiB + 12345, 8 * GiB - 4096):
                self.assertEqual(os.pread(fd, 4096, off), bytes(4096))
            # unwritten space is a hole to SEEK_DATA (as ext4 and XFS report it)
            with self.assertRaises(OSError) as cm:
                os.lseek(fd, 0, os.SEEK_DATA)
            self.assertEqual(cm.exception.errno, errno.ENXIO)
            # a write stores one block; its neighbours still read as zeros
            os.pwrite(fd, b"hello", 5 * GiB + 3)
            self.assertEqual(os.lseek(fd, 0, os.SEEK_DATA), 5 * GiB)
            self.assertEqual(os.lseek(fd, 5 * GiB, os.SEEK_HOLE), 5 * GiB + 4096)
            e = os.getxattr(path, "user.pmfuse.extents").decode()
            self.assertIn("unwritten_blocks %d\n" % (8 * GiB // 4096 - 1), e)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)
        m = self.mount(region)
        with open(path.replace(os.path.dirname(path), m.mnt), "rb") as f:
            f.seek(5 * GiB - 4)
            self.assertEqual(f.read(16), bytes(7) + b"hello" + bytes(4))
        before = os.statvfs(m.mnt).f_bfree
        os.unlink(os.path.join(m.mnt, "vm.img"))
        self.assertTrue(wait_until(
            lambda: os.statvfs(m.mnt).f_bfree - before >= 8 * GiB // 4096, 10),
            "unwritten blocks not given back after unlink")
        self.assertEqual(m.unmount(), 0)
        self.assertClean(region)


class OlderFormatTest(RegionTestCase):
    """Regions made by previous releases (format 1: fixed data runs;
    format 2: no unwritten extents; format 3: no chattr attributes; format
    4: a flat inode table; format 5: inode chunks never freed) mount, keep
    every file, and are upgraded in place to the current format (6)."""

    def image(self, version):
        return os.path.join(REPO, "tests", "data", "v%d-region.img.xz" % version)

    def v_region(self, version):
        region = self.region_path("v%d" % version)
        with lzma.open(self.image(version)) as src, open(region, "wb") as dst:
            while True:
                b = src.read(MiB)
                if not b:
                    break
                if b.count(0) == len(b):
                    dst.seek(len(b), os.SEEK_CUR)
                else:
                    dst.write(b)
            dst.truncate()
        return region

    def v1_region(self):
        return self.v_region(1)

    def check_manifest(self, mnt, version=1):
        with open(os.path.join(REPO, "tests", "data", "v%d-manifest.txt" % version)) as f:
            for line in f:
                kind, what, rel = line.rstrip("\n").split(" ", 2)
                p = os.path.join(mnt, rel)
                if kind == "L":
                    self.assertEqual(os.readlink(p), what, rel)
                else:
                    self.assertEqual(sha256_file(p), what, rel)
        self.assertEqual(os.getxattr(os.path.join(mnt, "small.txt"), "user.note"),
                         b"v%d xattr" % version)
        self.assertEqual(os.stat(os.path.join(mnt, "small.txt")).st_nlink, 2)
        self.assertTrue(os.path.exists(os.path.join(mnt, "fifo")))

    def upgrade(self, version):
        region = self.v_region(version)
        rc, out = fsck(region, "-n", "-v")
        self.assertEqual(rc, FSCK_OK, out)
        self.assertIn("pmfuse version %d" % version, out)
        m = self.mount(region)
        self.check_manifest(m.mnt, version)
        self.assertIn("upgraded from on-media format %d to 6" % version, m.log())
        if version == 5:    # its 200 deleted files' chunks: one kept, the rest freed
            self.assertGreaterEqual(fs_stats(m.mnt)["inode_chunks_freed"], 1)
        files = os.statvfs(m.mnt).f_files
        if version < 5:
            # a flat table's count (one inode per 16 KiB here) rises to the
            # ceiling, one per 256 bytes, as it becomes a top and leaves
            self.assertEqual(files, os.path.getsize(region) // 256 - 1)
        else:
            # upgraded from format 4 by the format-5 release, which kept it
            self.assertEqual(files, 2559)
        # format 1 set a metadata reserve aside; now data may use it
        st = os.statvfs(m.mnt)
        free = st.f_bfree * st.f_frsize
        self.assertGreater(free, 22 * MiB)
        data = os.urandom(MiB) * 20
        with open(os.path.join(m.mnt, "new.bin"), "wb") as f:
            f.write(data)
        # what format 3 adds: preallocated space is unwritten, not zeroed
        fd = os.open(os.path.join(m.mnt, "pre"), os.O_CREAT | os.O_RDWR, 0o644)
        os.posix_fallocate(fd, 0, MiB)
        os.pwrite(fd, b"x", 5000)
        os.close(fd)
        self.assertEqual(m.unmount(), 0)
        rc, out = fsck(region, "-n", "-v")
        self.assertEqual(rc, FSCK_OK, out)
        self.assertIn("pmfuse version 6", out)
        m = self.mount(region)
        self.check_manifest(m.mnt, version)
        with open(os.path.join(m.mnt, "new.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
        with open(os.path.join(m.mnt, "pre"), "rb") as f:
            self.assertEqual(f.read(), bytes(5000) + b"x" + bytes(MiB - 5001))
        self.assertNotIn("upgraded", m.log())
        self.assertEqual(m.unmount(), 0)
        self.assertEqual(fsck(region, "-n")[0], FSCK_OK)

    def test_format_one_region_mounts_upgrades_and_keeps_its_files(self):
        self.upgrade(1)

    def test_format_two_region_mounts_upgrades_and_keeps_its_files(self):
        self.upgrade(2)

    def test_format_three_region_mounts_upgrades_and_keeps_its_files(self):
        # made by the format-3 release from the format-2 image (its mount
        # upgraded it; its clean unmount wrote a clean-unmount record)
        self.upgrade(3)

    def test_format_four_region_mounts_upgrades_and_keeps_its_files(self):
        # made by the format-4 release from the format-3 image: its inode
        # table was flat, format 5's is a top and leaves
        self.upgrade(4)

    def test_format_five_region_mounts_upgrades_and_keeps_its_files(self):
        # made by the format-5 release from the format-4 image, with 200
        # files made and deleted in it: format 6 frees the inode chunks
        # they emptied at its first mount
        self.upgrade(5)

    def test_fsck_of_format_one_is_clean_and_read_only(self):
        region = self.v1_region()
        before = sha256_file(region)
        rc, out = fsck(region, "-n")
        self.assertEqual(rc, FSCK_OK, out)
        self.assertEqual(sha256_file(region), before)


if __name__ == "__main__":
    main()
