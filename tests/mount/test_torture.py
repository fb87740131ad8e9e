#!/usr/bin/env python3
"""Concurrency torture: every path that reaches an inode, at once.

tests/torture/torture.c runs N threads (default 10, on a 2-CPU machine)
for a bounded time against the mount: creates, writes, overwrites, fsyncs,
renames (over open files too, and RENAME_EXCHANGE), links, unlinks of open
files, truncates, punches, fallocate and zero range, copy_file_range,
readdir, lookups of names being removed, the stats xattr (which covers
every inode) read by two more threads without pause, the extents xattr,
FORGET storms from drop_caches, opens by file handle (open_by_handle_at,
as NFS servers do: LOOKUP of "." and ".." after the storms; handles of
files deleted in bursts that empty inode chunks, which the daemon frees
and makes again at the same numbers, must be stale), and shared
writable maps of the files under libpmfuse-dax (direct-access faults, msync, munmap).  Each thread checks every byte it reads
against its model.  Then the daemon is killed (SIGKILL, no clean unmount):
fsck must be clean, every file must hold exactly its model's bytes after
the next mount, the huge-extent counters must come back the same, and once
everything is deleted every block and inode must be free again.

PMFUSE_DAEMON names another daemon binary (the ThreadSanitizer build);
PMFUSE_TORTURE_SECONDS / _THREADS / _SEED change the run."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import main  # noqa: E402

DRIVER = os.path.join(h.BUILD, "tests", "torture", "torture")
SECONDS = os.environ.get("PMFUSE_TORTURE_SECONDS", "20")
THREADS = os.environ.get("PMFUSE_TORTURE_THREADS", "10")
SEED = os.environ.get("PMFUSE_TORTURE_SEED", str(int.from_bytes(os.urandom(4), "little")))


class TortureTest(h.PmfuseTestCase):
    region_size = "1G"
    test_timeout = 400

    @h.pmfuse_only
    def test_threads_on_every_inode_path_leave_every_byte_and_block_right(self):
        fresh = os.statvfs(self.mnt)
        state = tempfile.mkdtemp(prefix="pmfuse-torture-")
        self.addCleanup(shutil.rmtree, state, True)
        sys.stderr.write("torture: seed %s, %s threads, %s s\n" % (SEED, THREADS, SECONDS))
        # under libpmfuse-dax: the workers' maps take direct-access faults
        before_dax = h.fs_stats(self.mnt)["dax_faults"]
        before_handle = h.fs_stats(self.mnt)["req_lookup_handle"]
        r = h.run([DRIVER, "run", self.mnt, state, SECONDS, THREADS, SEED],
                  timeout=float(SECONDS) + 240, env=h.dax_preload_env())
        sys.stderr.write(r.stdout + r.stderr[-6000:])
        self.assertTrue(self.m.alive(), "the daemon died:\n" + self.m.log(tail=60000))
        self.assertEqual(r.returncode, 0, "torture run failed (seed %s)" % SEED)
        before = h.fs_stats(self.mnt)
        self.assertGreater(before["dax_faults"], before_dax, "no direct-access fault ran")
        self.assertGreater(before["req_lookup_handle"], before_handle,
                           "no file handle was decoded by the daemon")
        self.assertEqual((before["dax_maps"], before["dax_deferred_blocks"]), (0, 0))
        # bursts of creates and unlinks emptied inode chunks, given back
        # while other threads opened handles of their deleted files
        self.assertGreater(before["inode_chunks_freed"], 0, "no inode chunk was freed")

        # no clean unmount: what the daemon stored must hold without one
        self.crash()
        self.assertFsckClean()
        self.m = self.mount()
        r = h.run([DRIVER, "verify", self.mnt, state], timeout=240)
        sys.stderr.write(r.stdout + r.stderr[-6000:])
        self.assertEqual(r.returncode, 0, "files differ from the model after the crash")
        after = h.fs_stats(self.mnt)
        for k in ("huge_2m_extents", "huge_1g_extents", "blocks_free", "inodes_free"):
            self.assertEqual(after[k], before[k], "%s after the remount" % k)

        # a mount from the clean-unmount record reads no inode: each is
        # checked on first use -- here by three readers at once, while the
        # heap is still being listed, and again after a FORGET storm
        self.unmount()
        self.m = self.mount()
        self.assertEqual(h.fs_stats(self.mnt)["mount_state"], "verified")
        for _ in range(2):
            procs = [subprocess.Popen([DRIVER, "verify", self.mnt, state],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(3)]
            for p in procs:
                out, err = p.communicate(timeout=240)
                self.assertEqual(p.returncode, 0, "concurrent verify after a record mount:\n"
                                 + out + err[-6000:])
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")
        after = h.fs_stats(self.mnt)
        for k in ("huge_2m_extents", "huge_1g_extents", "blocks_free", "inodes_free"):
            self.assertEqual(after[k], before[k], "%s after the record mount" % k)

        # every block and inode comes back
        for name in os.listdir(self.mnt):
            p = self.p(name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        ok = h.wait_until(lambda: (os.statvfs(self.mnt).f_bfree, os.statvfs(self.mnt).f_ffree)
                          == (fresh.f_bfree, fresh.f_ffree), 10)
        st = os.statvfs(self.mnt)
        self.assertTrue(ok, "after deleting everything: %d blocks and %d inodes free, "
                        "fresh: %d and %d" % (st.f_bfree, st.f_ffree, fresh.f_bfree,
                                              fresh.f_ffree))
        s = h.fs_stats(self.mnt)
        self.assertEqual((s["huge_2m_extents"], s["huge_1g_extents"]), (0, 0))


if __name__ == "__main__":
    main()
