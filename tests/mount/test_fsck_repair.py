#!/usr/bin/env python3
"""pmfuse mount tests: fsck.pmfuse repair.

Each test makes files through a real mount, unmounts, damages the region in
one named way with the test-only tools/pmfuse-corrupt, and then requires:
fsck.pmfuse -n reports it (exit 4) without changing a byte of the region;
the repair mode that is meant to fix it does (exit 1); -n is then clean
(exit 0); and a new mount shows every reachable file with its exact
content, reattached inodes under /lost+found with theirs, and the space of
reclaimed files back in statfs.  tearDown's unmount + fsck -n adds the
last check."""

import errno
import os
import pty
import select
import signal
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BUILD, DAEMON, FSCK, FSCK_ERRORS, FSCK_OK, FSCK_OPERATIONAL,  # noqa: E402
                     FSCK_USAGE, PmfuseTestCase, fs_stats, fsck, main, pmfuse_only, read_file,
                     run, sha256_file, write_file)

CORRUPT = os.path.join(BUILD, "tests", "pmfuse-corrupt")
FSCK_CORRECTED = 1
FSCK_CANCELLED = 32
BLOCK = 4096


@pmfuse_only
class FsckRepairTest(PmfuseTestCase):

    region_size = "128M"

    # -- helpers
    def corrupt(self, *args):
        r = run([CORRUPT, self.region] + [str(a) for a in args])
        self.assertEqual(r.returncode, 0, "pmfuse-corrupt %s: %s%s" % (args, r.stdout, r.stderr))
        return r.stdout.strip()

    def fsck_expect(self, want, *args):
        rc, out = fsck(self.region, *args)
        self.assertEqual(rc, want, "fsck.pmfuse %s exited %d, expected %d:\n%s"
                         % (" ".join(args), rc, want, out[-4000:]))
        return out

    def check_only_reports(self, *expect_in_output):
        """fsck -n: exit 4, the damage named, not a byte of the region changed."""
        before = sha256_file(self.region)
        out = self.fsck_expect(FSCK_ERRORS, "-n")
        for s in expect_in_output:
            self.assertIn(s, out)
        self.assertEqual(sha256_file(self.region), before, "fsck -n modified the region")
        return out

    def repair_and_recheck(self, *mode):
        out = self.fsck_expect(FSCK_CORRECTED, *mode)
        self.fsck_expect(FSCK_OK, "-n")
        return out

    def make_files(self):
        """A small tree; returns {relative path: content} of its regular files."""
        files = {
            "top": os.urandom(5000),
            "d/inner": b"inner file\n",
            "d/sub/deep": os.urandom(70000),
            "d/" + "x" * 60: b"long name",      # a name stored out of line
            "keep": os.urandom(3 * BLOCK + 17),
        }
        os.makedirs(self.p("d", "sub"))
        for rel, data in files.items():
            write_file(self.p(rel), data)
        os.symlink("top", self.p("link"))
        return files

    def assertFiles(self, files, root=None):
        root = root or self.mnt
        for rel, data in files.items():
            self.assertEqual(read_file(os.path.join(root, rel)), data, rel)

    def free_blocks(self):
        return os.statvfs(self.mnt).f_bfree

    # -- link counts, entry counts, parents, block counts (-p)
    def test_wrong_counts_and_parent_are_set_by_p(self):
        files = self.make_files()
        os.link(self.p("top"), self.p("d", "top2"))
        ino = {rel: os.stat(self.p(rel)).st_ino for rel in ("top", "d", "d/sub", "keep")}
        blocks = os.stat(self.p("keep")).st_blocks
        self.unmount()
        self.corrupt("nlink", ino["top"], 7)
        self.corrupt("nlink", ino["d"], 9)
        self.corrupt("nentries", ino["d"], 1)
        self.corrupt("parent", ino["d/sub"], 1)
        self.corrupt("blocks", ino["keep"], 1)
        self.check_only_reports("link count 7", "entry count is 1", "parent is 1",
                                "blocks mapped")
        self.repair_and_recheck("-p", "-f")
        self.m = self.mount()
        self.assertFiles(files)
        self.assertEqual(read_file(self.p("d", "top2")), files["top"])
        self.assertEqual(os.stat(self.p("top")).st_nlink, 2)
        self.assertEqual(os.stat(self.p("d")).st_nlink, 3)
        self.assertEqual(os.stat(self.p("d", "sub", "..")).st_ino, ino["d"])
        self.assertEqual(os.stat(self.p("keep")).st_blocks, blocks)
        self.assertEqual(len(os.listdir(self.p("d"))), 4)
        # the repaired counts hold up under real changes
        os.unlink(self.p("d", "top2"))
        os.unlink(self.p("top"))
        self.assertFalse(os.path.exists(self.p("top")))
        os.rename(self.p("d", "sub"), self.p("sub"))
        self.assertEqual(os.stat(self.p("d")).st_nlink, 2)

    # -- the inode table's high-water mark (format 3, -p)
    def test_a_wrong_inode_table_high_water_mark_is_refused_and_set_by_p(self):
        os.mkdir(self.p("many"))
        for i in range(200):		# inodes 1..201: chunks 0..3
            write_file(self.p("many", "f%03d" % i), b"%d" % i)
        self.unmount()
        for bad, words in ((2, "chunk 3 lies past"), (9, "past the last chunk")):
            self.corrupt("hwm", bad)
            # the daemon would take the inodes past a low mark (and their
            # blocks) for free ones: it refuses, and says why
            r = run([DAEMON, self.region, self.mnt, "-f"], timeout=60)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("high-water mark %d" % bad, r.stderr)
            self.check_only_reports(words)
            out = self.repair_and_recheck("-p")
            self.assertIn("set the inode table high-water mark to 4", out)
        self.m = self.mount()
        for i in range(200):
            self.assertEqual(read_file(self.p("many", "f%03d" % i)), b"%d" % i)
        # a new chunk moves the mark, and the next mount reads it
        for i in range(200, 300):
            write_file(self.p("many", "f%03d" % i), b"%d" % i)
        self.remount()
        self.assertEqual(len(os.listdir(self.p("many"))), 300)

    # -- the clean-unmount record (record.c)
    COUNTERS = ("blocks_free", "inodes_free", "huge_2m_extents", "huge_1g_extents",
                "metadata_bytes", "data_area_blocks", "data_pieces")

    def counters(self):
        st = fs_stats(self.mnt)
        return {k: st[k] for k in self.COUNTERS}

    def mount_trusting(self):
        """A mount that takes the record without the tests' rebuild-and-compare."""
        os.environ["PMFUSE_VERIFY_RECORD"] = "0"
        try:
            return self.mount()
        finally:
            os.environ["PMFUSE_VERIFY_RECORD"] = "1"

    def make_varied(self):
        files = self.make_files()
        big = os.urandom(6 << 20)               # huge extents
        write_file(self.p("big"), big)
        files["big"] = big
        os.setxattr(self.p("top"), "user.k", b"v" * 300)
        for i in range(150):                    # a few inode chunks, some freed
            write_file(self.p("d", "s%d" % i), b"%d" % i)
            files["d/s%d" % i] = b"%d" % i
        for i in range(0, 150, 3):
            os.unlink(self.p("d", "s%d" % i))
            del files["d/s%d" % i]
        return files

    def test_clean_unmount_record_is_used_and_agrees_with_a_rebuild(self):
        files = self.make_varied()
        self.unmount()
        # the record is taken as is, and allocation from it works (inode
        # numbers and blocks it said free)
        self.m = self.mount_trusting()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "record")
        self.assertGreater(self.counters()["huge_2m_extents"], 0)
        self.assertFiles(files)
        for i in range(150, 260):
            write_file(self.p("d", "s%d" % i), os.urandom(i * 100))
            files["d/s%d" % i] = read_file(self.p("d", "s%d" % i))
        for i in range(150, 260, 2):
            os.unlink(self.p("d", "s%d" % i))
            del files["d/s%d" % i]
        self.unmount()
        self.fsck_expect(FSCK_OK, "-n")
        # what the next record says is what a rebuild of the same region finds
        self.m = self.mount_trusting()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "record")
        from_record = self.counters()
        self.unmount()
        self.corrupt("record-flip", 3)
        self.m = self.mount()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "rebuilt")
        self.assertEqual(self.counters(), from_record)
        self.assertFiles(files)
        # the tests' mounts rebuild too and refuse a difference: it agrees
        self.unmount()
        self.m = self.mount()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "verified")
        self.assertEqual(self.counters(), from_record)
        # after kill -9 there is no record: the mount rebuilds, and says so
        self.crash()
        self.m = self.mount()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "rebuilt")
        self.assertIn("not cleanly unmounted", self.m.log())
        self.assertEqual(self.counters(), from_record)

    def test_damaged_record_is_not_trusted_the_mount_rebuilds(self):
        files = self.make_varied()
        self.unmount()
        self.m = self.mount_trusting()
        want = self.counters()
        self.unmount()
        self.corrupt("record-flip", 70)
        self.check_only_reports("clean-unmount record is damaged", "checksum mismatch")
        self.m = self.mount_trusting()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "rebuilt")
        self.assertIn("clean-unmount record not used (checksum mismatch)", self.m.log())
        self.assertEqual(self.counters(), want)
        self.assertFiles(files)
        # the mount dropped it; the unmount writes a good one
        self.unmount()
        self.fsck_expect(FSCK_OK, "-n")
        self.m = self.mount()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "verified")

    def test_record_that_lies_about_an_inode_is_caught(self):
        files = self.make_varied()
        ino = os.stat(self.p("keep")).st_ino
        self.unmount()
        self.corrupt("record-lie-inode", ino)     # "free", with a good checksum
        self.check_only_reports("disagrees with the file maps", "inode %d is free" % ino)
        r = run([DAEMON, self.region, self.mnt, "-f"], timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("clean-unmount record disagrees with a rebuild", r.stderr)
        # trusted anyway, the slot in use is never handed out again
        self.m = self.mount_trusting()
        for i in range(200):
            write_file(self.p("n%d" % i), b"new %d" % i)
        self.assertFiles(files)
        self.assertIn("inode %d is in use but the clean-unmount record listed it free" % ino,
                      self.m.log())
        for i in range(200):
            self.assertEqual(read_file(self.p("n%d" % i)), b"new %d" % i)

    def test_record_that_frees_a_used_block_is_caught(self):
        files = self.make_varied()
        files["last"] = os.urandom(3 * BLOCK)    # in a partly used segment
        write_file(self.p("last"), files["last"])
        ino = os.stat(self.p("last")).st_ino
        self.unmount()
        self.corrupt("record-free-block", ino)
        self.check_only_reports("disagrees with the file maps", "free blocks differ")
        # trusted anyway: the file is checked on first use and not served
        self.m = self.mount_trusting()
        with self.assertRaises(OSError) as cm:
            read_file(self.p("last"))
        self.assertEqual(cm.exception.errno, errno.EIO)
        self.assertIn("names blocks the allocator has free", self.m.log())
        self.assertEqual(read_file(self.p("top")), files["top"])
        self.m.kill()
        # fsck finds the file sound (the record is gone with the mount)
        self.fsck_expect(FSCK_OK, "-n")
        self.m = self.mount()
        self.assertFiles(files)

    def test_fsck_drops_a_lying_record(self):
        files = self.make_varied()
        files["last"] = os.urandom(3 * BLOCK)
        write_file(self.p("last"), files["last"])
        ino = os.stat(self.p("last")).st_ino
        self.unmount()
        self.corrupt("record-free-block", ino)
        out = self.repair_and_recheck("-p", "-f")
        self.assertIn("drop the clean-unmount record", out)
        self.m = self.mount()
        self.assertEqual(fs_stats(self.mnt)["mount_state"], "rebuilt")
        self.assertFiles(files)

    # -- orphans (-p)
    def test_unlinked_inode_off_the_orphan_list_is_reclaimed_by_p(self):
        files = self.make_files()
        big = os.urandom(2 << 20)
        write_file(self.p("big"), big)
        free_with_big = self.free_blocks()
        ino = os.stat(self.p("big")).st_ino
        self.unmount()
        # what an unlink leaves if the inode missed the orphan list
        self.corrupt("drop-dirent", 1, "big")
        self.corrupt("orphan", ino)
        self.check_only_reports("inode %d: link count 0 but not an orphan" % ino)
        out = self.repair_and_recheck("-p", "-f")
        self.assertIn("inode %d: reclaim" % ino, out)
        self.m = self.mount()
        self.assertFiles(files)
        self.assertFalse(os.path.exists(self.p("big")))
        self.assertGreaterEqual(self.free_blocks() - free_with_big, len(big) // BLOCK)

    def test_orphan_list_is_reclaimed_by_p_without_f(self):
        files = self.make_files()
        big = os.urandom(1 << 20)
        write_file(self.p("open-unlinked"), big)
        free_with_it = self.free_blocks()
        ino = os.stat(self.p("open-unlinked")).st_ino
        self.unmount()
        # an unlink of an open file, then a crash: legitimate, not an error
        self.corrupt("drop-dirent", 1, "open-unlinked")
        self.corrupt("orphan-list", ino)
        before = sha256_file(self.region)
        out = self.fsck_expect(FSCK_OK, "-n", "-v")
        self.assertIn("orphans: 1", out)
        self.assertEqual(sha256_file(self.region), before, "fsck -n modified the region")
        # a non-empty orphan list is not "clean": -p looks without -f
        out = self.repair_and_recheck("-p")
        self.assertIn("inode %d: reclaim" % ino, out)
        out = self.fsck_expect(FSCK_OK, "-n", "-v")
        self.assertIn("orphans: 0", out)
        self.m = self.mount()
        self.assertFiles(files)
        self.assertGreaterEqual(self.free_blocks() - free_with_it, len(big) // BLOCK)

    def test_inode_named_but_with_link_count_0_gets_its_count_back(self):
        files = self.make_files()
        ino = os.stat(self.p("d", "inner")).st_ino
        self.unmount()
        self.corrupt("orphan", ino)
        self.check_only_reports("inode %d: link count 0 but not an orphan" % ino)
        self.repair_and_recheck("-p", "-f")
        self.m = self.mount()
        self.assertFiles(files)
        self.assertEqual(os.stat(self.p("d", "inner")).st_nlink, 1)

    # -- entries naming free inodes (-p)
    def test_entries_naming_free_inodes_are_removed_by_p(self):
        files = self.make_files()
        names = sorted(os.listdir(self.mnt))
        dino = os.stat(self.p("d")).st_ino
        self.unmount()
        self.corrupt("dangling-dirent", 1, "ghost", 60)       # free slot of chunk 0
        self.corrupt("dangling-dirent", dino, "ghost2", 5000)  # chunk never allocated
        self.check_only_reports('entry "ghost" refers to free inode 60',
                                'entry "ghost2" refers to unallocated inode 5000')
        self.repair_and_recheck("-p", "-f")
        self.m = self.mount()
        self.assertEqual(sorted(os.listdir(self.mnt)), names)
        self.assertFiles(files)
        write_file(self.p("ghost"), b"a new file may take the name")
        self.assertEqual(read_file(self.p("ghost")), b"a new file may take the name")

    # -- leaked metadata objects (-p)
    def test_unreferenced_objects_are_freed_by_p(self):
        files = self.make_files()
        self.unmount()
        offs = [self.corrupt("leak-object", size) for size in (100, 5000, 300000)]
        out = self.check_only_reports(*("object at offset %s" % o for o in offs))
        self.assertIn("3 unreferenced", self.fsck_expect(FSCK_ERRORS, "-n", "-v"))
        out = self.repair_and_recheck("-p", "-f")
        for o in offs:
            self.assertIn("unreferenced object at offset %s" % o, out)
        self.assertIn("0 unreferenced", self.fsck_expect(FSCK_OK, "-n", "-v"))
        self.m = self.mount()
        self.assertFiles(files)

    # -- unreachable inodes: /lost+found (-y)
    def test_unreachable_file_is_reattached_under_lost_found_by_y(self):
        files = self.make_files()
        dino = os.stat(self.p("d")).st_ino
        ino = os.stat(self.p("d", "inner")).st_ino
        self.unmount()
        self.corrupt("drop-dirent", dino, "inner")
        self.check_only_reports("inode %d: regular file is not in any directory" % ino)
        self.repair_and_recheck("-y")
        self.m = self.mount()
        del files["d/inner"]
        self.assertFiles(files)
        self.assertNotIn("inner", os.listdir(self.p("d")))
        found = self.p("lost+found", "#%d" % ino)
        self.assertEqual(read_file(found), b"inner file\n")
        self.assertEqual(os.stat(found).st_ino, ino)
        self.assertEqual(os.stat(found).st_nlink, 1)
        st = os.stat(self.p("lost+found"))
        self.assertEqual(st.st_mode & 0o7777, 0o700)
        self.assertEqual(st.st_nlink, 2)
        # it is an ordinary file again
        os.rename(found, self.p("d", "inner"))
        self.assertEqual(read_file(self.p("d", "inner")), b"inner file\n")

    def test_unreachable_directory_tree_is_reattached_by_y(self):
        files = self.make_files()
        dino = os.stat(self.p("d")).st_ino
        free_before = self.free_blocks()
        self.unmount()
        self.corrupt("drop-dirent", 1, "d")
        self.check_only_reports("inode %d: directory is not connected to the root" % dino,
                                "inode 1: link count")
        self.repair_and_recheck("-y")
        self.m = self.mount()
        moved = self.p("lost+found", "#%d" % dino)
        self.assertFiles({k: v for k, v in files.items() if not k.startswith("d/")})
        self.assertFiles({k[2:]: v for k, v in files.items() if k.startswith("d/")}, moved)
        self.assertEqual(os.stat(os.path.join(moved, "..")).st_ino,
                         os.stat(self.p("lost+found")).st_ino)
        self.assertEqual(os.stat(self.p("lost+found")).st_nlink, 3)
        self.assertEqual(os.stat(self.mnt).st_nlink, 3)     # only lost+found below /
        self.assertEqual(self.free_blocks(), free_before, "reattaching must keep every block")
        # and it is an ordinary tree again
        os.rename(moved, self.p("d"))
        self.assertFiles(files)
        os.rmdir(self.p("lost+found"))

    def test_p_leaves_what_needs_y_and_exits_4(self):
        files = self.make_files()
        ino = os.stat(self.p("keep")).st_ino
        self.unmount()
        self.corrupt("drop-dirent", 1, "keep")
        self.check_only_reports("inode %d: regular file is not in any directory" % ino)
        out = self.fsck_expect(FSCK_ERRORS, "-p", "-f")
        self.assertIn("needs -y", out)
        self.fsck_expect(FSCK_ERRORS, "-n")          # still there, nothing made worse
        self.repair_and_recheck("-y")
        self.m = self.mount()
        self.assertEqual(read_file(self.p("lost+found", "#%d" % ino)), files.pop("keep"))
        self.assertFiles(files)

    def test_freed_directory_leaves_its_children_to_lost_found(self):
        files = self.make_files()
        dino = os.stat(self.p("d", "sub")).st_ino
        deep = os.stat(self.p("d", "sub", "deep")).st_ino
        self.unmount()
        # the record freed under its entry: its table and chunk leak, "deep" is lost
        self.corrupt("clear-inode", dino)
        self.check_only_reports('entry "sub" refers to free inode %d' % dino,
                                "not referenced")
        self.repair_and_recheck("-y")
        self.m = self.mount()
        self.assertEqual(read_file(self.p("lost+found", "#%d" % deep)), files.pop("d/sub/deep"))
        self.assertFiles(files)
        self.assertNotIn("sub", os.listdir(self.p("d")))
        self.assertEqual(os.stat(self.p("d")).st_nlink, 2)

    # -- modes and exit codes
    def test_p_skips_a_cleanly_unmounted_region_unless_f(self):
        self.make_files()
        ino = os.stat(self.p("top")).st_ino
        self.unmount()
        self.corrupt("nlink", ino, 3)
        out = self.fsck_expect(FSCK_OK, "-p")
        self.assertIn("clean", out)
        self.fsck_expect(FSCK_ERRORS, "-n")
        # not unmounted cleanly (the daemon died): -p checks, repairs, records it clean
        self.corrupt("state", 2)
        self.repair_and_recheck("-a")
        self.assertIn("state: cleanly unmounted", self.fsck_expect(FSCK_OK, "-n", "-v"))
        self.m = self.mount()

    def test_fsck_of_a_mounted_region_exits_8_in_every_mode(self):
        files = self.make_files()
        for args in (("-n",), ("-p",), ("-a", "-f"), ("-y",), ("-y", "-f")):
            rc, out = fsck(self.region, *args)
            self.assertEqual(rc, FSCK_OPERATIONAL, "%s: %s" % (args, out))
            self.assertIn("is in use (mounted?)", out)
        self.assertTrue(self.m.alive())
        self.assertFiles(files)

    def test_usage_errors_exit_16_and_help_tells_the_modes(self):
        for args in ([], ["-n", "-y", self.region], ["-p", "-y", self.region],
                     ["-n", "-a", self.region], ["-z", self.region],
                     ["-n", self.region, self.region]):
            r = run([FSCK] + args)
            self.assertEqual(r.returncode, FSCK_USAGE, "%s: %s%s" % (args, r.stdout, r.stderr))
        r = run([FSCK, "--help"])
        self.assertEqual(r.returncode, 0)
        for s in ("-n", "-p", "-a", "-y", "-f", "lost+found", "32 cancelled", "1 errors corrected"):
            self.assertIn(s, r.stdout)

    # -- on a terminal: questions, and SIGINT
    def run_on_terminal(self, answer_or_signal):
        """fsck.pmfuse REGION on a pty; answer the first question or signal it."""
        master, slave = pty.openpty()
        proc = subprocess.Popen([FSCK, self.region], stdin=slave, stdout=slave,
                                stderr=slave, close_fds=True)
        os.close(slave)
        out = b""
        acted = False
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(master, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    out += chunk
                if not acted and b"[y/n/a(ll)]" in out:
                    acted = True
                    if isinstance(answer_or_signal, bytes):
                        os.write(master, answer_or_signal)
                    else:
                        proc.send_signal(answer_or_signal)
                if proc.poll() is not None and not ready:
                    break
            rc = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        self.assertTrue(acted, "no question was asked:\n" + out.decode(errors="replace"))
        return rc, out.decode(errors="replace")

    def test_on_a_terminal_each_repair_is_asked_for(self):
        files = self.make_files()
        ino = os.stat(self.p("keep")).st_ino
        self.unmount()
        self.corrupt("drop-dirent", 1, "keep")
        rc, out = self.run_on_terminal(b"a\n")    # yes to all
        self.assertEqual(rc, FSCK_CORRECTED, out)
        self.fsck_expect(FSCK_OK, "-n")
        self.m = self.mount()
        self.assertEqual(read_file(self.p("lost+found", "#%d" % ino)), files.pop("keep"))
        self.assertFiles(files)

    def test_sigint_at_a_question_cancels_with_32(self):
        files = self.make_files()
        self.unmount()
        self.corrupt("drop-dirent", 1, "keep")
        rc, out = self.run_on_terminal(signal.SIGINT)
        self.assertEqual(rc, FSCK_CANCELLED, out)
        self.fsck_expect(FSCK_ERRORS, "-n")       # as it was: nothing repaired
        self.repair_and_recheck("-y")
        self.m = self.mount()
        del files["keep"]
        self.assertFiles(files)


if __name__ == "__main__":
    main()
