#!/usr/bin/env python3
"""pmfusectl: stats of a live mount (table and JSON, equal to the
user.pmfuse.stats xattr), info on a region mounted or not (read-only),
label changes that fsck accepts and the daemon mounts, and clean refusals
of mounted, foreign and garbage regions."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import main  # noqa: E402

PMFUSECTL = os.path.join(h.BUILD, "mkfs", "pmfusectl")
LABEL = "ctl-test-label"
UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
MiB = 1 << 20
STATS_HINT = "the filesystem's own mountpoint"


def ctl(*args, env=None):
    """Run pmfusectl ARGS; CompletedProcess with text stdout/stderr."""
    return subprocess.run([PMFUSECTL] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace", timeout=60,
                          env=env)


xattr_stats = h.fs_stats


class CtlCase(h.PmfuseTestCase):
    mkfs_args = ("-L", LABEL, "-U", UUID)

    def assertOk(self, r):
        self.assertEqual(r.returncode, 0, "pmfusectl failed (%d):\n%s%s"
                         % (r.returncode, r.stdout, r.stderr))

    def assertRefused(self, r, *words):
        """Exit 1 (a failure, not a crash or a usage error), the reason on stderr."""
        self.assertEqual(r.returncode, 1, "expected exit 1, got %d:\n%s%s"
                         % (r.returncode, r.stdout, r.stderr))
        for w in words:
            self.assertIn(w, r.stderr)

    def info_json(self):
        r = ctl("info", "-j", self.region)
        self.assertOk(r)
        return json.loads(r.stdout)


@h.pmfuse_only
class StatsTest(CtlCase):
    def write_some(self):
        h.write_file(self.p("f"), os.urandom(3 * MiB), fsync=True)
        fd = os.open(self.p("f"), os.O_RDWR)
        try:
            os.pwrite(fd, b"dirty", 4096)   # one dirty page, writeback mode
        finally:
            os.close(fd)
        h.write_file(self.p("sparse"), b"")
        os.truncate(self.p("sparse"), 1 * MiB)
        h.read_file(self.p("sparse"))       # zero bytes served

    def test_stats_table_shows_every_group_with_the_xattr_numbers(self):
        self.write_some()
        # the kernel releases files asynchronously, and a release may flush:
        # compare with counters that stood still around the table's reading
        for _ in range(50):
            raw = xattr_stats(self.mnt)
            r = ctl("stats", self.mnt)
            if xattr_stats(self.mnt) == raw:
                break
            time.sleep(0.1)
        self.assertOk(r)
        out = r.stdout
        for word in ("Space", "Inodes", "Data engine", "Mount", "total", "used", "free",
                     "flushed", "flush calls", "drains", "dirty pages", "zero bytes served",
                     "huge extents, 2 MiB", "huge extents, 1 GiB", "granularity", "mode",
                     "mounted at", "uptime", self.mnt, self.region):
            self.assertIn(word, out)
        self.assertNotIn("\x1b", out, "colour codes on a pipe")
        rows = {}
        section = None
        for line in out.splitlines():
            if line and not line.startswith(" "):
                section = line
                continue
            if len(line.split()) >= 2:     # "  label (20 columns) value ..."
                label = line[:23].strip()
                rows[(section.split()[0] if section else "", label)] = line[23:].split()
        self.assertEqual(int(rows[("Space", "total")][0]), raw["blocks_total"])
        self.assertEqual(int(rows[("Space", "free")][0]), raw["blocks_free"])
        self.assertEqual(int(rows[("Space", "used")][0]),
                         raw["blocks_total"] - raw["blocks_free"])
        self.assertEqual(int(rows[("Inodes", "total")][0]), raw["inodes_total"])
        self.assertEqual(int(rows[("Inodes", "free")][0]), raw["inodes_free"])
        self.assertEqual(int(rows[("Data", "flushed")][0]), raw["flush_bytes"])
        self.assertEqual(int(rows[("Data", "drains")][0]), raw["drains"])
        self.assertEqual(int(rows[("Data", "dirty pages")][0]), raw["dirty_pages"])
        self.assertEqual(int(rows[("Data", "zero bytes served")][0]),
                         raw["zero_bytes_served"])
        self.assertEqual(rows[("Mount", "mode")][0], raw["mode"])
        self.assertEqual(rows[("Mount", "granularity")][0], raw["granularity"])
        self.assertGreaterEqual(raw["dirty_pages"], 1)
        self.assertGreater(raw["zero_bytes_served"], 0)

    def test_stats_json_has_every_xattr_field_with_its_value(self):
        self.write_some()
        raw = xattr_stats(self.mnt)
        r = ctl("stats", "-j", self.mnt)
        self.assertOk(r)
        j = json.loads(r.stdout)
        for k, v in raw.items():
            self.assertIn(k, j)
            if (k.startswith("uring_") and k != "uring_queues") or k.startswith("req_"):
                # counts requests, the ones that read the stats among them
                self.assertGreaterEqual(j[k], v, k)
            else:
                self.assertEqual(j[k], v, k)
        self.assertEqual(j["mountpoint"], self.mnt)
        self.assertEqual(j["region"], self.region)
        self.assertEqual(j["block_size"], 4096)
        self.assertEqual(j["blocks_used"], raw["blocks_total"] - raw["blocks_free"])
        self.assertEqual(j["inodes_used"], raw["inodes_total"] - raw["inodes_free"])
        self.assertGreaterEqual(j["inodes_used"], 3)    # root, f, sparse
        self.assertGreaterEqual(j["uptime_seconds"], 0)

    def test_mounted_at_is_this_sessions_start(self):
        t0 = int(time.time())
        self.remount()
        t1 = int(time.time())
        at = xattr_stats(self.mnt)["mounted_at"]
        self.assertGreaterEqual(at, t0)
        self.assertLessEqual(at, t1 + 1)
        j = json.loads(ctl("stats", "-j", self.mnt).stdout)
        self.assertEqual(j["mounted_at"], at)
        self.assertLessEqual(j["uptime_seconds"], int(time.time()) - t0 + 1)

    def test_stats_of_a_path_inside_the_mount_or_of_the_region(self):
        os.mkdir(self.p("d"))
        h.write_file(self.p("d", "f"), b"x")
        for arg in (self.p("d"), self.p("d", "f"), self.region):
            r = ctl("stats", "-j", arg)
            self.assertOk(r)
            self.assertEqual(json.loads(r.stdout)["mountpoint"], self.mnt, arg)

    def test_stats_under_watch_needs_no_terminal(self):
        # watch(1) runs us with a pipe for stdout, TERM set, no input
        env = dict(os.environ, TERM="xterm-256color")
        p = subprocess.run([PMFUSECTL, "stats", self.mnt], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(b"\x1b", p.stdout)

    def test_stats_on_a_directory_that_is_not_pmfuse_fails(self):
        r = ctl("stats", self.workdir)
        self.assertRefused(r, "not a pmfuse mount")
        self.assertEqual(r.stdout, "")
        r = ctl("stats", "-j", self.workdir)
        self.assertRefused(r, "not a pmfuse mount")
        self.assertEqual(r.stdout, "")

    def test_stats_on_a_missing_path_or_unmounted_region_fails(self):
        self.assertRefused(ctl("stats", os.path.join(self.workdir, "nope")),
                           "No such file")
        self.unmount()
        self.assertRefused(ctl("stats", self.region), "not", "pmfuse")

    def test_stats_of_a_mount_whose_daemon_died_says_so(self):
        os.kill(self.m.proc.pid, 9)
        self.m.proc.wait()
        r = ctl("stats", self.mnt)
        self.assertRefused(r, "daemon is gone", "fusermount3 -u")
        self.crash()        # detaches the dead mount
        self.m = self.mount()

    def test_stats_of_a_bind_mounted_subdirectory_points_at_the_real_mount(self):
        os.mkdir(self.p("sub"))
        bind = os.path.join(self.workdir, "bind")
        os.mkdir(bind)
        r = h.run(["mount", "--bind", self.p("sub"), bind])
        if r.returncode:
            self.skipTest("mount --bind failed: " + r.stderr)
        try:
            self.assertRefused(ctl("stats", bind), "bind mount", STATS_HINT)
        finally:
            h.run(["umount", bind])

    def test_stats_usage_errors(self):
        self.assertEqual(ctl("stats").returncode, 2)
        self.assertEqual(ctl("stats", "-x", self.mnt).returncode, 2)
        self.assertEqual(ctl("stats", self.mnt, self.mnt).returncode, 2)


@h.pmfuse_only
class InfoTest(CtlCase):
    def test_info_on_a_mounted_region_says_where_it_is_mounted(self):
        r = ctl("info", self.region)
        self.assertOk(r)
        self.assertIn("%s is mounted on %s" % (self.region, self.mnt), r.stdout)
        self.assertIn(LABEL, r.stdout)
        self.assertIn(UUID, r.stdout)
        self.assertIn("mounted (in use now)", r.stdout)
        j = self.info_json()
        self.assertTrue(j["in_use"])
        self.assertEqual(j["mountpoints"], [self.mnt])
        self.assertEqual(j["state"], "mounted")
        self.assertEqual(j["label"], LABEL)

    def test_info_on_an_unmounted_region_shows_what_mkfs_wrote(self):
        self.unmount()
        r = ctl("info", self.region)
        self.assertOk(r)
        out = r.stdout
        self.assertNotIn("is mounted", out)
        for word in ("format version", "UUID", UUID, "label", '"%s"' % LABEL, "region size",
                     "maximum inodes", "inode table", "data runs", "run 0", "state",
                     "clean (cleanly unmounted)", "mount count", "created", "last mounted",
                     "backup superblock", "ok"):
            self.assertIn(word, out)
        j = self.info_json()
        self.assertFalse(j["in_use"])
        self.assertEqual(j["mountpoints"], [])
        self.assertEqual(j["version"], 6)
        self.assertEqual(j["uuid"], UUID)
        self.assertEqual(j["label"], LABEL)
        self.assertEqual(j["region_size"], os.path.getsize(self.region))
        self.assertEqual(j["block_size"], 4096)
        self.assertEqual(j["state"], "clean")
        self.assertEqual(j["mount_count"], 1)
        self.assertEqual(j["backup_superblock"], "ok")
        self.assertFalse(j["orphans"])
        self.assertLessEqual(j["created"], j["last_mount"])
        self.assertLessEqual(j["last_mount"], time.time() + 1)
        self.assertGreaterEqual(len(j["data_runs"]), 1)
        for run in j["data_runs"]:
            self.assertEqual(run["offset"] % (2 * MiB), 0)
            self.assertEqual(run["length"] % (2 * MiB), 0)
        self.assertEqual(j["data_bytes"], sum(x["length"] for x in j["data_runs"]))
        # the same numbers as the mounted filesystem reports
        self.m = self.mount()
        raw = xattr_stats(self.mnt)
        self.assertEqual(raw["blocks_total"], j["capacity_blocks"])
        self.assertGreater(j["capacity_blocks"], j["data_bytes"] // 4096)
        self.assertEqual(raw["inodes_total"], j["max_inodes"])

    def test_info_reads_the_region_without_writing_it(self):
        h.write_file(self.p("f"), b"data" * 1000)
        self.unmount()
        before = (h.sha256_file(self.region), os.stat(self.region).st_mtime_ns)
        self.assertOk(ctl("info", self.region))
        self.assertOk(ctl("info", "-j", self.region))
        after = (h.sha256_file(self.region), os.stat(self.region).st_mtime_ns)
        self.assertEqual(before, after)

    def test_info_after_a_crash_says_not_cleanly_unmounted(self):
        self.crash()
        r = ctl("info", self.region)
        self.assertOk(r)
        self.assertIn("NOT cleanly unmounted", r.stdout)
        self.assertNotIn("is mounted", r.stdout)
        self.assertEqual(self.info_json()["state"], "unclean")
        self.m = self.mount()
        self.assertEqual(self.info_json()["state"], "mounted")

    def test_info_through_a_symlink_to_the_region_finds_the_mount(self):
        link = os.path.join(self.workdir, "region-link")
        os.symlink(self.region, link)
        r = ctl("info", link)
        self.assertOk(r)
        self.assertIn("is mounted on %s" % self.mnt, r.stdout)


@h.pmfuse_only
class LabelTest(CtlCase):
    def test_label_change_is_seen_by_info_fsck_and_the_daemon(self):
        data = os.urandom(5 * MiB + 123)
        h.write_file(self.p("keep"), data, fsync=True)
        os.mkdir(self.p("dir"))
        h.write_file(self.p("dir", "small"), b"small file")
        self.unmount()
        r = ctl("label", self.region, "renamed volume")
        self.assertOk(r)
        self.assertIn('"%s"' % LABEL, r.stdout)
        self.assertIn('"renamed volume"', r.stdout)
        j = self.info_json()
        self.assertEqual(j["label"], "renamed volume")
        self.assertEqual(j["uuid"], UUID)
        self.assertEqual(j["backup_superblock"], "ok")
        self.assertEqual(j["state"], "clean")
        self.assertFsckClean()
        rc, out = h.fsck(self.region, "-n", "-v")
        self.assertEqual(rc, 0, out)
        self.assertIn('label "renamed volume"', out)
        self.m = self.mount()
        self.assertEqual(h.sha256_file(self.p("keep")), h.sha256_bytes(data))
        self.assertEqual(h.read_file(self.p("dir", "small")), b"small file")
        self.assertEqual(self.info_json()["label"], "renamed volume")

    def test_label_of_a_mounted_region_is_refused(self):
        r = ctl("label", self.region, "other")
        self.assertRefused(r, "in use", self.mnt)
        self.assertEqual(self.info_json()["label"], LABEL)
        h.write_file(self.p("still-works"), b"x")

    def test_label_too_long_is_refused_and_63_bytes_fit(self):
        self.unmount()
        self.assertRefused(ctl("label", self.region, "x" * 64), "at most 63")
        self.assertEqual(self.info_json()["label"], LABEL)
        self.assertOk(ctl("label", self.region, "y" * 63))
        self.assertEqual(self.info_json()["label"], "y" * 63)
        self.assertFsckClean()
        # a shorter label after a longer one: no bytes of the old one remain
        self.assertOk(ctl("label", self.region, "z"))
        self.assertEqual(self.info_json()["label"], "z")
        self.assertFsckClean()

    def test_empty_label_clears_it(self):
        self.unmount()
        self.assertOk(ctl("label", self.region, ""))
        self.assertEqual(self.info_json()["label"], "")
        self.assertIn("(none)", ctl("info", self.region).stdout)
        self.assertFsckClean()

    def test_label_usage_errors(self):
        self.assertEqual(ctl("label").returncode, 2)
        self.assertEqual(ctl("label", self.region).returncode, 2)
        self.assertEqual(ctl("label", self.region, "a", "b").returncode, 2)


@unittest.skipIf(bool(h.REFERENCE), "pmfuse-specific")
class ForeignRegionTest(unittest.TestCase):
    """Regions that are not pmfuse: refused with a reason, never written."""

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="pmfuse-test-work-")
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.paths = []
        self.addCleanup(lambda: [h.remove_quietly(p) for p in self.paths])

    def file_with(self, size, content=b"", tag="foreign"):
        p = h.new_region_path(tag)
        self.paths.append(p)
        with open(p, "wb") as f:
            f.write(content)
            f.truncate(size)
        return p

    def assertRefusedUnchanged(self, path, *words):
        before = h.sha256_file(path) if os.path.isfile(path) else None
        for args in (("info", path), ("info", "-j", path), ("label", path, "x")):
            r = ctl(*args)
            self.assertEqual(r.returncode, 1, "%s: %d\n%s%s" % (args, r.returncode,
                                                                r.stdout, r.stderr))
            self.assertEqual(r.stdout, "")
            for w in words:
                self.assertIn(w, r.stderr)
        if before is not None:
            self.assertEqual(h.sha256_file(path), before)

    def test_garbage_file_is_not_a_pmfuse_region(self):
        p = self.file_with(64 * MiB, os.urandom(1 * MiB), "garbage")
        self.assertRefusedUnchanged(p, "not a pmfuse region")

    def test_zeroed_file_is_not_a_pmfuse_region(self):
        self.assertRefusedUnchanged(self.file_with(64 * MiB), "not a pmfuse region")

    def test_small_and_empty_files_are_too_small(self):
        self.assertRefusedUnchanged(self.file_with(0), "too small")
        self.assertRefusedUnchanged(self.file_with(1 * MiB), "too small")

    def test_pmemobj_pool_of_another_layout_is_refused(self):
        pmempool = shutil.which("pmempool")
        if not pmempool:
            self.skipTest("pmempool (pmdk-tools) not installed")
        p = h.new_region_path("otherpool")
        self.paths.append(p)
        r = h.run([pmempool, "create", "--layout", "not-pmfuse", "--size", "64M", "obj", p])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRefusedUnchanged(p, "another layout")

    def test_damaged_superblock_is_refused_with_a_pointer_to_fsck(self):
        p = h.make_region("64M")
        self.paths.append(p)
        data = bytearray(h.read_file(p)[:8 << 20])
        magic = data.find(h.PMFUSE_MAGIC)
        self.assertGreater(magic, 0)
        with open(p, "r+b") as f:     # one bit of the label: checksum mismatch
            f.seek(magic + 8 + 4 + 4 + 16)
            f.write(bytes([data[magic + 8 + 4 + 4 + 16] ^ 1]))
        self.assertRefusedUnchanged(p, "checksum", "fsck.pmfuse")

    def test_directories_and_missing_paths_are_refused(self):
        self.assertRefusedUnchanged(self.workdir, "not a regular file or devdax device")
        self.assertRefusedUnchanged(os.path.join(self.workdir, "missing"), "No such file")


@unittest.skipIf(bool(h.REFERENCE), "pmfuse-specific")
class CommandLineTest(unittest.TestCase):
    def test_help_version_and_usage_errors(self):
        r = ctl("--help")
        self.assertEqual(r.returncode, 0)
        for word in ("stats", "info", "label", "-j"):
            self.assertIn(word, r.stdout)
        for opt in ("-V", "--version"):
            r = ctl(opt)
            self.assertEqual(r.returncode, 0)
            self.assertRegex(r.stdout, r"^pmfusectl \S+ \(on-media format 6\)\n$")
        self.assertEqual(ctl().returncode, 2)
        r = ctl("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command", r.stderr)
        self.assertEqual(ctl("--bogus").returncode, 2)


if __name__ == "__main__":
    main()
