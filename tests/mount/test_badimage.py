#!/usr/bin/env python3
"""pmfuse mount tests: bad regions, mkfs.pmfuse and fsck.pmfuse behaviour,
daemon lifecycle (signals, daemonizing, a second daemon)."""

import lzma
import os
import shutil
import struct
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DAEMON, FSCK, FSCK_ERRORS, FSCK_OK, FSCK_OPERATIONAL,  # noqa: E402
                     FSCK_USAGE, FUSERMOUNT, MIN_REGION, MKFS, PMFUSE_MAGIC, REFERENCE, REPO,
                     Mount, daemon_pids_for, fsck, is_mounted, main, make_region, mkfs,
                     new_region_path, read_file, remove_quietly, run, sha256_file,
                     wait_until, write_file)

MiB = 1 << 20


@unittest.skipIf(bool(REFERENCE), "pmfuse-specific")
class RegionTestCase(unittest.TestCase):
    """Regions and mountpoints are created by the tests; all are cleaned up."""

    test_timeout = 120

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="pmfuse-test-work-")
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.mounts = []
        self.regions = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for m in reversed(self.mounts):
            m.force_cleanup()
        for r in self.regions:
            for pid in daemon_pids_for(r):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            remove_quietly(r)

    def mountpoint(self):
        d = os.path.realpath(tempfile.mkdtemp(prefix="pmfuse-test-mnt-"))

        def rm():
            if is_mounted(d):
                run([FUSERMOUNT, "-u", "-z", d])
            try:
                os.rmdir(d)
            except OSError:
                pass
        self.addCleanup(rm)
        return d

    def region_path(self, tag="region"):
        p = new_region_path(tag)
        self.regions.append(p)
        return p

    def formatted(self, size="64M", *args):
        p = make_region(size, *args)
        self.regions.append(p)
        return p

    def zero_file(self, size, tag="zero"):
        p = self.region_path(tag)
        with open(p, "wb") as f:
            f.truncate(size)
        return p

    def mount(self, region, mnt=None, opts=()):
        m = Mount(region, mnt or self.mountpoint(), opts=opts, log_dir=self.workdir)
        self.mounts.append(m)
        m.start()
        return m

    def unmount_clean(self, m):
        rc = m.unmount()
        self.assertEqual(rc, 0, "pmfuse exited with %s on unmount:\n%s" % (rc, m.log()))

    def assertFsckClean(self, region):
        rc, out = fsck(region, "-n")
        self.assertEqual(rc, FSCK_OK, "fsck.pmfuse -n exited %d:\n%s" % (rc, out[-3000:]))

    def attempt_mount(self, region, mnt=None, timeout=15):
        """Run the daemon on a region that must be refused.

        Returns (exit code, stderr).  Fails if it mounts or hangs."""
        mnt = mnt or self.mountpoint()
        errpath = os.path.join(self.workdir, "attempt-%s.err" % os.path.basename(mnt))
        with open(errpath, "wb") as err:
            proc = subprocess.Popen([DAEMON, region, mnt, "-f"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        deadline = time.monotonic() + timeout
        mounted = False
        while proc.poll() is None and time.monotonic() < deadline:
            if is_mounted(mnt):
                mounted = True
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            if is_mounted(mnt):
                run([FUSERMOUNT, "-u", "-z", mnt])
            self.fail("pmfuse %s the bad region %s instead of refusing it"
                      % ("mounted" if mounted else "hung on", region))
        self.assertFalse(is_mounted(mnt), "refused region left a mount behind")
        return proc.returncode, read_file(errpath).decode(errors="replace")

    def assertRefused(self, region, what):
        before = sha256_file(region) if os.path.exists(region) else None
        rc, err = self.attempt_mount(region)
        self.assertGreater(rc, 0, "%s: pmfuse must exit non-zero without a signal (got %d)\n%s"
                           % (what, rc, err))
        self.assertTrue(err.strip(), "%s: pmfuse must say why on stderr" % what)
        after = sha256_file(region) if os.path.exists(region) else None
        self.assertEqual(before, after, "%s: refusing must not modify the region" % what)
        return err


def find_superblock(path):
    with open(path, "rb") as f:
        data = f.read()
    i = data.find(PMFUSE_MAGIC)
    if i < 0:
        raise AssertionError("no pmfuse superblock magic in a freshly formatted region")
    return i


def flip_byte(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))


class BadRegionTest(RegionTestCase):

    def test_a_zero_filled_region_is_refused(self):
        self.assertRefused(self.zero_file(64 * MiB), "zero-filled 64 MiB file")

    def test_an_empty_file_is_refused(self):
        self.assertRefused(self.zero_file(0, "empty"), "0-byte file")

    def test_a_missing_region_file_is_refused(self):
        p = self.region_path("missing")
        self.assertRefused(p, "missing region")
        self.assertFalse(os.path.exists(p), "the daemon must not create a region")

    def test_a_directory_as_region_is_refused(self):
        d = tempfile.mkdtemp(prefix="pmfuse-test-dirregion-")
        self.addCleanup(os.rmdir, d)
        rc, err = self.attempt_mount(d)
        self.assertGreater(rc, 0)
        self.assertTrue(err.strip())

    def test_a_region_truncated_to_half_is_refused(self):
        p = self.formatted("128M")
        os.truncate(p, 64 * MiB)
        self.assertRefused(p, "region truncated to half")

    def test_a_region_grown_after_mkfs_is_refused(self):
        p = self.formatted("64M")
        os.truncate(p, 96 * MiB)
        self.assertRefused(p, "region grown after mkfs")

    def test_a_flipped_byte_in_the_superblock_is_refused(self):
        p = self.formatted("64M")
        off = find_superblock(p)
        flip_byte(p, off + 40)      # inside the label of the main superblock
        err = self.assertRefused(p, "flipped superblock byte")
        self.assertNotIn("Segmentation", err)

    def test_a_flipped_magic_byte_is_refused(self):
        p = self.formatted("64M")
        flip_byte(p, find_superblock(p) + 1)
        self.assertRefused(p, "flipped magic byte")

    def test_a_pmemobj_pool_of_another_layout_is_refused(self):
        pmempool = shutil.which("pmempool")
        if not pmempool:
            self.skipTest("pmempool (package pmdk-tools) not installed")
        p = self.region_path("otherpool")
        r = run([pmempool, "create", "-s", "64M", "-l", "other", "obj", p])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRefused(p, "pmemobj pool with layout 'other'")

    def test_the_refused_mountpoint_is_usable_afterwards(self):
        mnt = self.mountpoint()
        rc, _ = self.attempt_mount(self.zero_file(64 * MiB), mnt)
        self.assertGreater(rc, 0)
        good = self.formatted("64M")
        m = self.mount(good, mnt)
        write_file(os.path.join(mnt, "ok"), b"fine")
        self.unmount_clean(m)
        self.assertFsckClean(good)

    def test_a_second_daemon_on_a_mounted_region_is_refused(self):
        p = self.formatted("64M")
        m = self.mount(p)
        write_file(os.path.join(m.mnt, "before"), b"1")
        rc, err = self.attempt_mount(p)
        self.assertGreater(rc, 0, err)
        self.assertTrue(err.strip(), "the second daemon must say why on stderr")
        # the first daemon is unharmed
        self.assertTrue(m.alive())
        write_file(os.path.join(m.mnt, "after"), b"2")
        self.assertEqual(read_file(os.path.join(m.mnt, "before")), b"1")
        self.assertEqual(sorted(os.listdir(m.mnt)), ["after", "before"])
        self.unmount_clean(m)
        self.assertFsckClean(p)

    def test_a_missing_mountpoint_is_refused(self):
        p = self.formatted("64M")
        before = sha256_file(p)
        missing = os.path.join(self.workdir, "no-such-dir")
        r = run([DAEMON, p, missing, "-f"], timeout=30)
        self.assertGreater(r.returncode, 0)
        self.assertTrue(r.stderr.strip())
        self.assertEqual(sha256_file(p), before)
        self.assertFsckClean(p)


class MkfsTest(RegionTestCase):

    def test_mkfs_creates_a_region_of_the_requested_size_that_mounts(self):
        p = self.region_path()
        r = mkfs(p, "-s", "48M")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.path.getsize(p), 48 * MiB)
        self.assertFsckClean(p)
        m = self.mount(p)
        self.assertEqual(os.listdir(m.mnt), [])
        self.unmount_clean(m)

    def test_mkfs_formats_an_existing_zero_filled_file_at_its_size(self):
        p = self.zero_file(40 * MiB)
        r = mkfs(p, "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.path.getsize(p), 40 * MiB)
        self.assertFsckClean(p)

    def test_mkfs_quiet_prints_nothing_on_success(self):
        p = self.region_path()
        r = mkfs(p, "-q", "-s", "64M")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")

    def test_mkfs_version_option(self):
        r = run([MKFS, "-V"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue((r.stdout + r.stderr).strip())

    def test_mkfs_refuses_an_existing_pmfuse_region_without_f_and_accepts_with_f(self):
        p = self.formatted("64M")
        m = self.mount(p)
        write_file(os.path.join(m.mnt, "precious"), b"data")
        self.unmount_clean(m)
        before = sha256_file(p)
        r = mkfs(p, "-q")
        self.assertNotEqual(r.returncode, 0, "mkfs overwrote a pmfuse region without -f")
        self.assertTrue(r.stderr.strip(), "mkfs must say why it refuses")
        self.assertEqual(sha256_file(p), before)
        r = mkfs(p, "-q", "-s", "64M")
        self.assertNotEqual(r.returncode, 0, "mkfs -s overwrote a pmfuse region without -f")
        self.assertEqual(sha256_file(p), before)
        r = mkfs(p, "-q", "-f")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFsckClean(p)
        m = self.mount(p)
        self.assertEqual(os.listdir(m.mnt), [], "mkfs -f must produce an empty filesystem")
        self.unmount_clean(m)

    def _foreign(self, kind):
        p = self.zero_file(64 * MiB, kind)
        if kind == "ext4":
            r = run(["mkfs.ext4", "-q", "-F", p]) if shutil.which("mkfs.ext4") else None
            if r is None or r.returncode != 0:
                with open(p, "r+b") as f:       # superblock magic 0xEF53 at 1080
                    f.seek(1024)
                    f.write(b"\x00" * 56 + b"\x53\xef")
        elif kind == "xfs":
            r = run(["mkfs.xfs", "-q", "-f", p]) if shutil.which("mkfs.xfs") else None
            if r is None or r.returncode != 0:
                with open(p, "r+b") as f:       # "XFSB" + block size 4096, big-endian
                    f.write(b"XFSB\x00\x00\x10\x00")
        elif kind == "btrfs":
            r = run(["mkfs.btrfs", "-q", "-f", p]) if shutil.which("mkfs.btrfs") else None
            if r is None or r.returncode != 0:
                with open(p, "r+b") as f:       # magic at 64 KiB + 64
                    f.seek(0x10040)
                    f.write(b"_BHRfS_M")
        elif kind == "pmemobj":
            os.unlink(p)
            r = run(["pmempool", "create", "-s", "64M", "-l", "something", "obj", p])
            self.assertEqual(r.returncode, 0, r.stderr)
        return p

    def test_mkfs_refuses_foreign_signatures_without_f(self):
        kinds = ["ext4", "xfs", "btrfs"]
        if shutil.which("pmempool"):
            kinds.append("pmemobj")
        else:
            sys.stderr.write("[pmempool missing: pmemobj signature case not run] ")
        for kind in kinds:
            with self.subTest(kind):
                p = self._foreign(kind)
                before = sha256_file(p)
                r = mkfs(p, "-q")
                self.assertNotEqual(r.returncode, 0, "mkfs overwrote a %s signature without -f" % kind)
                self.assertTrue(r.stderr.strip(), "mkfs must say why it refuses (%s)" % kind)
                self.assertEqual(sha256_file(p), before)
                r = mkfs(p, "-q", "-f")
                self.assertEqual(r.returncode, 0, "%s with -f: %s" % (kind, r.stderr))
                self.assertFsckClean(p)

    def test_mkfs_rejects_a_region_smaller_than_32_mib_naming_the_minimum(self):
        p = self.region_path("small")
        r = mkfs(p, "-s", "16M")
        self.assertNotEqual(r.returncode, 0, "mkfs accepted a 16 MiB region")
        self.assertIn("minimum", r.stderr.lower())
        self.assertIn("32", r.stderr)
        p2 = self.zero_file(MIN_REGION - 4096, "small2")
        r = mkfs(p2)
        self.assertNotEqual(r.returncode, 0, "mkfs accepted a region of 32 MiB - 4 KiB")
        self.assertIn("minimum", r.stderr.lower())
        self.assertEqual(os.path.getsize(p2), MIN_REGION - 4096)
        p3 = self.region_path("exact")
        r = mkfs(p3, "-q", "-s", "32M")
        self.assertEqual(r.returncode, 0, "exactly 32 MiB must be accepted: " + r.stderr)
        self.assertFsckClean(p3)

    def test_mkfs_dry_run_writes_nothing(self):
        z = self.zero_file(64 * MiB)
        before = sha256_file(z)
        r = mkfs(z, "-n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sha256_file(z), before)
        missing = self.region_path("dry")
        mkfs(missing, "-n", "-s", "64M")
        self.assertFalse(os.path.exists(missing), "mkfs -n created the region file")
        fmt = self.formatted("64M")
        before = sha256_file(fmt)
        mkfs(fmt, "-n", "-f")
        self.assertEqual(sha256_file(fmt), before, "mkfs -n -f changed an existing region")

    def test_mkfs_records_label_and_uuid_in_the_superblock(self):
        u = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        p = self.region_path()
        r = mkfs(p, "-q", "-s", "64M", "-L", "my-label", "-U", str(u))
        self.assertEqual(r.returncode, 0, r.stderr)
        off = find_superblock(p)
        with open(p, "rb") as f:
            f.seek(off)
            geo = f.read(96)
        self.assertEqual(geo[16:32], u.bytes, "uuid")
        self.assertEqual(geo[32:32 + 9], b"my-label\0", "label")
        self.assertFsckClean(p)

    def test_mkfs_rejects_an_invalid_uuid_and_an_overlong_label(self):
        p = self.region_path()
        r = mkfs(p, "-q", "-s", "64M", "-U", "not-a-uuid")
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip())
        r = mkfs(p, "-q", "-s", "64M", "-f", "-L", "x" * 100)
        self.assertNotEqual(r.returncode, 0, "a label longer than 63 bytes must be rejected")
        self.assertTrue(r.stderr.strip())

    def test_mkfs_f_refuses_a_mounted_region(self):
        # not in the written spec, but overwriting a live pool would destroy it
        p = self.formatted("64M")
        m = self.mount(p)
        write_file(os.path.join(m.mnt, "live"), b"x")
        r = mkfs(p, "-q", "-f")
        self.assertNotEqual(r.returncode, 0, "mkfs -f formatted a mounted region")
        self.assertEqual(read_file(os.path.join(m.mnt, "live")), b"x")
        self.unmount_clean(m)
        self.assertFsckClean(p)


class FsckTest(RegionTestCase):

    def test_fsck_of_a_fresh_region_is_clean(self):
        p = self.formatted("64M")
        self.assertFsckClean(p)
        rc, _ = fsck(p, "-n", "-v")
        self.assertEqual(rc, FSCK_OK)

    def test_fsck_of_a_mounted_region_exits_8_with_a_message(self):
        p = self.formatted("64M")
        m = self.mount(p)
        before_names = os.listdir(m.mnt)
        rc, out = fsck(p, "-n")
        self.assertEqual(rc, FSCK_OPERATIONAL, out)
        self.assertTrue(out.strip(), "fsck must say the region is in use")
        self.assertEqual(os.listdir(m.mnt), before_names)
        self.assertTrue(m.alive())
        self.unmount_clean(m)
        self.assertFsckClean(p)

    def test_fsck_reports_a_damaged_superblock_without_changing_it(self):
        p = self.formatted("64M")
        flip_byte(p, find_superblock(p) + 40)
        before = sha256_file(p)
        rc, out = fsck(p, "-n")
        self.assertEqual(rc, FSCK_ERRORS, out)
        self.assertTrue(out.strip())
        self.assertEqual(sha256_file(p), before, "fsck -n modified the region")

    def test_fsck_of_a_zero_filled_file_fails(self):
        z = self.zero_file(64 * MiB)
        rc, out = fsck(z, "-n")
        self.assertIn(rc, (FSCK_ERRORS, FSCK_OPERATIONAL), out)
        self.assertTrue(out.strip())

    def test_fsck_of_a_missing_file_is_an_operational_error(self):
        rc, out = fsck(self.region_path("missing"), "-n")
        self.assertEqual(rc, FSCK_OPERATIONAL, out)
        self.assertTrue(out.strip())

    def test_fsck_without_arguments_is_a_usage_error(self):
        r = run([FSCK])
        self.assertEqual(r.returncode, FSCK_USAGE, r.stdout + r.stderr)
        r = run([FSCK, "--no-such-option", "x"])
        self.assertEqual(r.returncode, FSCK_USAGE, r.stdout + r.stderr)


class LifecycleTest(RegionTestCase):

    def _signal_exits_cleanly(self, sig):
        p = self.formatted("64M")
        m = self.mount(p)
        write_file(os.path.join(m.mnt, "kept"), b"across a signal")
        m.signal(sig)
        rc = m.wait(timeout=20)
        self.assertEqual(rc, 0, "pmfuse exited %d on %s:\n%s" % (rc, sig.name, m.log()))
        self.assertTrue(wait_until(lambda: not is_mounted(m.mnt), 5),
                        "mount still present after the daemon exited on %s" % sig.name)
        self.assertFsckClean(p)
        m2 = self.mount(p, m.mnt)
        self.assertEqual(read_file(os.path.join(m2.mnt, "kept")), b"across a signal")
        self.unmount_clean(m2)
        self.assertFsckClean(p)

    def test_sigterm_unmounts_and_exits_0(self):
        self._signal_exits_cleanly(signal.SIGTERM)

    def test_sigint_unmounts_and_exits_0(self):
        self._signal_exits_cleanly(signal.SIGINT)

    def test_fusermount_u_makes_the_foreground_daemon_exit_0(self):
        p = self.formatted("64M")
        m = self.mount(p)
        self.unmount_clean(m)
        self.assertFalse(is_mounted(m.mnt))
        self.assertFsckClean(p)

    def test_plain_umount_makes_the_foreground_daemon_exit_0(self):
        p = self.formatted("64M")
        m = self.mount(p)
        r = run(["umount", m.mnt])
        self.assertEqual(r.returncode, 0, r.stderr)
        rc = m.wait(timeout=20)
        self.assertEqual(rc, 0, m.log())
        self.assertFsckClean(p)

    def test_without_f_the_daemon_returns_once_the_mount_is_live(self):
        p = self.formatted("64M")
        mnt = self.mountpoint()
        out = os.path.join(self.workdir, "bg.out")
        with open(out, "wb") as f:
            try:
                r = subprocess.run([DAEMON, p, mnt], stdin=subprocess.DEVNULL, stdout=f,
                                   stderr=subprocess.STDOUT, timeout=30)
            except subprocess.TimeoutExpired:
                self.fail("pmfuse without -f did not return within 30 s")
        self.assertEqual(r.returncode, 0, read_file(out))
        self.assertTrue(is_mounted(mnt), "mount not live when the command returned")
        pids = daemon_pids_for(p)
        self.assertEqual(len(pids), 1, "expected exactly one background daemon, found %s" % pids)
        write_file(os.path.join(mnt, "bg"), b"daemonized")
        self.assertEqual(read_file(os.path.join(mnt, "bg")), b"daemonized")
        r = run([FUSERMOUNT, "-u", mnt])
        self.assertEqual(r.returncode, 0, r.stderr)

        def gone():
            try:
                with open("/proc/%d/stat" % pids[0]) as f:
                    return f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except FileNotFoundError:
                return True
        self.assertTrue(wait_until(gone, 20), "background daemon did not exit after unmount")
        self.assertFsckClean(p)


# libpmemobj 1.12's heap as pmemobj_create() lays it out (daemon/core/pool.c)
OBJ_HEAP_OFFSET_OFF = 4096 + 1040
OBJ_HEAP_HDR = 1024
OBJ_ZONE_MAGIC = 0xC3F0A2D2
CHUNK_FOOTER, CHUNK_FREE, CHUNK_USED, CHUNK_RUN = 1, 2, 3, 4


class Zone0:
    """Zone 0's chunk headers, read from and written back to a region file."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            f.seek(OBJ_HEAP_OFFSET_OFF)
            heap_off, = struct.unpack("<Q", f.read(8))
            self.zone_off = heap_off + OBJ_HEAP_HDR
            f.seek(self.zone_off)
            magic, self.nchunks = struct.unpack("<II", f.read(8))
            if magic != OBJ_ZONE_MAGIC:
                raise AssertionError("zone 0 of %s has no zone magic" % path)
            f.seek(self.zone_off + 64)
            raw = f.read(8 * self.nchunks)
        self.hdr = [struct.unpack_from("<HHI", raw, 8 * i) for i in range(self.nchunks)]

    def blocks(self):
        """(chunk, type, flags, size) of each block, walking the zone as libpmemobj does."""
        i = 0
        while i < self.nchunks:
            t, fl, n = self.hdr[i]
            yield i, t, fl, n
            i += n

    def set(self, i, t, fl, n):
        self.hdr[i] = (t, fl, n)
        with open(self.path, "r+b") as f:
            f.seek(self.zone_off + 64 + 8 * i)
            f.write(struct.pack("<HHI", t, fl, n))


class PmemobjHeapTest(RegionTestCase):
    """libpmemobj 1.12 leaves a huge block's footer unflushed and its heap
    boot trusts the footers of free blocks: a power loss between a block's
    split and the write-back of its footer's line left an image whose first
    allocation killed the daemon (SIGSEGV in heap_get_adjacent_free_block).
    The daemon mends the footers after pmemobj_open()."""

    def fill_and_check(self, region, mb=12):
        m = self.mount(region)
        data = os.urandom(mb * MiB)
        path = os.path.join(m.mnt, "after")
        write_file(path, data)
        self.unmount_clean(m)
        self.assertIn("stale chunk footer", m.log())
        self.assertFsckClean(region)
        m = self.mount(region)
        self.assertEqual(read_file(os.path.join(m.mnt, "after")), data)
        self.assertNotIn("stale chunk footer", m.log(), "footers mended once stay mended")
        self.unmount_clean(m)

    def test_a_split_free_block_whose_footer_was_lost_mounts_and_allocates(self):
        region = self.formatted("64M")
        z = Zone0(region)
        free = [b for b in z.blocks() if b[1] == CHUNK_FREE and b[3] > b[0] + 4]
        self.assertTrue(free, "a fresh region has a large free block in zone 0: %r"
                        % list(z.blocks()))
        i, _, fl, n = free[-1]
        # the block split in two free blocks (as a cancelled allocation leaves
        # it); the first one's footer never reached the media, and its chunk
        # still holds the header of a block that once started there and ran
        # to the end of the free space
        z.set(i, CHUNK_FREE, fl, 2)
        z.set(i + 2, CHUNK_FREE, fl, n - 2)
        z.set(i + 1, CHUNK_FREE, fl, n - 1)
        self.assertFsckClean(region)
        self.fill_and_check(region)
        z = Zone0(region)
        for c, t, _, size in z.blocks():
            if t in (CHUNK_FREE, CHUNK_USED) and size > 1:
                self.assertEqual((z.hdr[c + size - 1][0], z.hdr[c + size - 1][2]),
                                 (CHUNK_FOOTER, size), "footer of the block at chunk %d" % c)

    def test_a_crash_image_of_the_explorer_with_stale_footers_mounts_and_allocates(self):
        # crash_line_writeback's tmpfile workload, crash point 87: a 3 MiB
        # tmpfile was being linked while the data area grew
        region = self.region_path("stale-footer")
        with lzma.open(os.path.join(REPO, "tests", "data", "crash-stale-footer.img.xz")) as src, \
                open(region, "wb") as dst:
            shutil.copyfileobj(src, dst)
        self.assertFsckClean(region)
        self.fill_and_check(region, mb=16)

    def test_chunk_headers_that_do_not_tile_the_zone_are_refused_with_a_message(self):
        region = self.formatted("64M")
        z = Zone0(region)
        i, t, fl, n = [b for b in z.blocks() if b[1] == CHUNK_FREE][-1]
        z.set(i, t, fl, z.nchunks)      # runs past the zone's end
        rc, err = self.attempt_mount(region)
        self.assertGreater(rc, 0, err)
        # libpmemobj's own heap check (or, behind it, pmfuse's walk) says so
        self.assertRegex(err, "chunk sizes mismatch|chunk %d is damaged" % i)
        rc, out = fsck(region, "-n")
        self.assertNotIn(rc, (FSCK_OK,), out)
        self.assertGreaterEqual(rc, 0, "fsck must not die of a signal:\n" + out)


if __name__ == "__main__":
    main()
