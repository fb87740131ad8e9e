#!/usr/bin/env python3
"""pmfuse mount tests: running pmfuse the way administrators do.

systemd (unit files that verify, Type=notify readiness, the stale-mount
cleanup of ExecStartPre, SIGTERM with dirty data), fstab mounts through
mount.fuse3, log levels and the journal's priority prefixes, one log line
per damaged inode, unprivileged mounts through fusermount3, meson install."""
import errno
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BUILD, DAEMON, FSCK, FSCK_OK, FUSERMOUNT, MKFS, REPO, Mount,  # noqa: E402
                     daemon_pids_for, fsck, is_mounted, main, mount_entry,
                     read_file, run, wait_until, write_file)
from test_badimage import RegionTestCase  # noqa: E402

MiB = 1 << 20


def stats(mnt):
    raw = os.getxattr(mnt, "user.pmfuse.stats").decode()
    return {k: v for k, v in (line.split(None, 1) for line in raw.splitlines() if line)}


def pid_gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def unit_exec_lines(text, key):
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


class SystemdTests(RegionTestCase):

    def unit_text(self):
        with open(os.path.join(BUILD, "systemd", "pmfuse@.service")) as f:
            return f.read()

    def test_units_pass_systemd_analyze_verify(self):
        tool = shutil.which("systemd-analyze")
        self.assertIsNotNone(tool, "systemd-analyze missing (package systemd)")
        d = tempfile.mkdtemp(dir=self.workdir)
        text = self.unit_text()
        sbin = unit_exec_lines(text, "ExecStart")[0].split()[0]
        self.assertTrue(sbin.endswith("/pmfuse"), sbin)
        # verify needs the binary it names to exist: point it at the build
        with open(os.path.join(d, "pmfuse@mnt-pm.service"), "w") as f:
            f.write(text.replace(sbin, DAEMON))
        shutil.copy(os.path.join(REPO, "systemd", "mnt-pm.mount.example"),
                    os.path.join(d, "mnt-pm.mount"))
        for unit in ("pmfuse@mnt-pm.service", "mnt-pm.mount"):
            r = run([tool, "verify", "--man=no", os.path.join(d, unit)])
            # unknown keys and bad values are only warnings: no output at all
            self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), unit)
        self.assertIn("Type=notify", text)
        keys = [ln.split("=", 1)[0] for ln in text.splitlines() if "=" in ln and ln[0] != "#"]
        for forbidden in ("PrivateDevices", "ProtectSystem", "ProtectHome", "PrivateTmp",
                          "PrivateMounts", "ProtectKernelTunables", "ReadOnlyPaths"):
            self.assertNotIn(forbidden, keys, "mount namespaces hide the mount from the host")
        for needed in ("DeviceAllow=/dev/fuse rw", "DeviceAllow=char-dax rw",
                       "CapabilityBoundingSet=CAP_SYS_ADMIN", "Restart=on-failure",
                       "OOMScoreAdjust=", "EnvironmentFile=/etc/pmfuse/%i.conf"):
            self.assertIn(needed, text)

    def start_with_notify(self, region, mnt, sock_path, extra=()):
        errpath = os.path.join(self.workdir, "notify.err")
        env = dict(os.environ, NOTIFY_SOCKET=sock_path)
        with open(errpath, "wb") as err:
            proc = subprocess.Popen([DAEMON, region, mnt, "-f"] + list(extra),
                                    stdin=subprocess.DEVNULL, stdout=err,
                                    stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc, errpath

    def test_ready_is_sent_once_the_mount_is_live_and_stopping_on_sigterm(self):
        p = self.formatted("64M")
        mnt = self.mountpoint()
        sock_path = os.path.join(self.workdir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(sock_path)
        sock.settimeout(20)
        proc, errpath = self.start_with_notify(p, mnt, sock_path)
        msg = sock.recv(4096).decode()
        mounted_at_ready = is_mounted(mnt)
        self.assertIn("READY=1", msg.split("\n"))
        self.assertTrue(mounted_at_ready, "READY=1 arrived before the mount was visible")
        self.assertIn("STATUS=Mounted %s on %s" % (p, mnt), msg)
        self.assertIn(mount_entry(mnt)[0], ("fuse.pmfuse",))
        write_file(os.path.join(mnt, "f"), b"notified")
        proc.send_signal(signal.SIGTERM)
        msg = sock.recv(4096).decode()
        self.assertIn("STOPPING=1", msg.split("\n"))
        self.assertEqual(proc.wait(timeout=30), 0, read_file(errpath))
        self.assertTrue(wait_until(lambda: not is_mounted(mnt), 5))
        self.assertFsckClean(p)

    def test_ready_reaches_a_notify_socket_in_the_abstract_namespace(self):
        # NOTIFY_SOCKET=@name (what systemd uses in containers): a socket
        # with no path, its name the bytes after a NUL
        p = self.formatted("64M")
        mnt = self.mountpoint()
        name = "pmfuse-test-notify-%d-%d" % (os.getpid(), id(self))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind("\0" + name)
        sock.settimeout(20)
        proc, errpath = self.start_with_notify(p, mnt, "@" + name)
        msg = sock.recv(4096).decode()
        self.assertIn("READY=1", msg.split("\n"))
        self.assertTrue(is_mounted(mnt))
        self.assertEqual(run([FUSERMOUNT, "-u", mnt]).returncode, 0)
        self.assertIn("STOPPING=1", sock.recv(4096).decode().split("\n"))
        self.assertEqual(proc.wait(timeout=30), 0, read_file(errpath))

    def test_a_missing_notify_socket_does_not_stop_the_mount(self):
        p = self.formatted("64M")
        mnt = self.mountpoint()
        proc, errpath = self.start_with_notify(p, mnt, os.path.join(self.workdir, "nobody"))
        self.assertTrue(wait_until(lambda: is_mounted(mnt) or proc.poll() is not None, 15))
        self.assertTrue(is_mounted(mnt), read_file(errpath))
        self.assertEqual(run([FUSERMOUNT, "-u", mnt]).returncode, 0)
        self.assertEqual(proc.wait(timeout=30), 0, read_file(errpath))

    def test_sigterm_with_dirty_data_flushes_it_and_remount_shows_it(self):
        p = self.formatted("64M")
        m = self.mount(p)
        f = os.path.join(m.mnt, "dirty")
        write_file(f, b"a" * (64 << 10), fsync=True)
        new = os.urandom(64 << 10)
        fd = os.open(f, os.O_WRONLY)
        os.pwrite(fd, new, 0)		# in-place overwrite: DIRTY until fsync
        os.close(fd)
        self.assertEqual(int(stats(m.mnt)["dirty_pages"]), 16)
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(timeout=30), 0, m.log())
        self.assertIn("unmounted: 16 dirty page(s) flushed", m.log())
        self.assertTrue(wait_until(lambda: not is_mounted(m.mnt), 5))
        self.assertFsckClean(p)
        m2 = self.mount(p, m.mnt)
        self.assertEqual(read_file(f), new)
        self.unmount_clean(m2)

    def run_unit(self, text, instance_path, conf, sock):
        """Start the service as systemd would: EnvironmentFile, the
        ExecStartPre lines, then ExecStart with NOTIFY_SOCKET, up to READY=1.
        Returns the main process."""
        env = dict(os.environ, NOTIFY_SOCKET=sock.getsockname())
        with open(conf) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    env[k] = v

        def expand(cmd):
            # %f, ${VAR} as one word, $VAR split on white space (systemd.service(5))
            words = []
            for w in shlex.split(cmd.replace("%f", instance_path)):
                if w.startswith("${") and w.endswith("}"):
                    words.append(env.get(w[2:-1], ""))
                elif w.startswith("$") and len(w) > 1:
                    words.extend(env.get(w[1:], "").split())
                else:
                    words.append(w)
            return words
        for pre in unit_exec_lines(text, "ExecStartPre"):
            ignore = pre.startswith("-")
            r = subprocess.run(expand(pre.lstrip("-")), env=env, capture_output=True)
            self.assertTrue(ignore or r.returncode == 0, (pre, r.stderr))
        start = unit_exec_lines(text, "ExecStart")[0]
        errpath = os.path.join(self.workdir, "unit-%s.err" % os.urandom(2).hex())
        with open(errpath, "wb") as err:
            proc = subprocess.Popen(expand(start), env=env, stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, start_new_session=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        msg = sock.recv(4096).decode()
        self.assertIn("READY=1", msg.split("\n"), read_file(errpath))
        return proc

    def test_the_unit_starts_stops_and_starts_again_with_the_data_there(self):
        """systemctl start / stop / start, as far as it can be done without
        systemd as PID 1: the unit's own command lines, its EnvironmentFile
        format, Type=notify readiness and the SIGTERM it stops with."""
        text = self.unit_text().replace(unit_exec_lines(self.unit_text(), "ExecStart")[0]
                                        .split()[0], DAEMON)
        region = self.formatted("64M")
        mnt = os.path.join(self.workdir, "mnt", "pm")     # ExecStartPre makes it
        conf = os.path.join(self.workdir, "mnt-pm.conf")
        with open(os.path.join(REPO, "systemd", "pmfuse.conf.example")) as f:
            example = f.read()
        with open(conf, "w") as f:
            f.write(example.replace("REGION=/dev/dax0.0", "REGION=" + region)
                    .replace("OPTIONS=\n", "OPTIONS=-o log_level=warning\n"))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(os.path.join(self.workdir, "notify.sock"))
        sock.settimeout(20)
        self.addCleanup(lambda: is_mounted(mnt) and run([FUSERMOUNT, "-u", "-z", mnt]))
        proc = self.run_unit(text, mnt, conf, sock)
        self.assertEqual(mount_entry(mnt)[:2], ("fuse.pmfuse", region))
        data = os.urandom(300000)
        write_file(os.path.join(mnt, "kept"), data)
        fd = os.open(os.path.join(mnt, "kept"), os.O_WRONLY)
        os.pwrite(fd, b"dirty at stop", 4096)           # unflushed when stopped
        os.close(fd)
        proc.send_signal(signal.SIGTERM)                  # systemctl stop
        self.assertIn("STOPPING=1", sock.recv(4096).decode().split("\n"))
        self.assertEqual(proc.wait(timeout=30), 0)
        self.assertTrue(wait_until(lambda: not is_mounted(mnt), 5))
        proc = self.run_unit(text, mnt, conf, sock)      # systemctl start
        self.assertEqual(read_file(os.path.join(mnt, "kept")),
                         data[:4096] + b"dirty at stop" + data[4096 + 13:])
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0)
        self.assertTrue(wait_until(lambda: not is_mounted(mnt), 5))
        self.assertFsckClean(region)

    def exec_start_pre_cleanup(self, mnt):
        """Run the unit's stale-mount ExecStartPre line for mountpoint mnt."""
        lines = [ln for ln in unit_exec_lines(self.unit_text(), "ExecStartPre")
                 if "not connected" in ln]
        self.assertEqual(len(lines), 1)
        cmd = lines[0]
        self.assertTrue(cmd.startswith("/bin/sh -c '") and cmd.endswith("' sh %f"), cmd)
        script = cmd[len("/bin/sh -c '"):-len("' sh %f")]
        return run(["/bin/sh", "-c", script, "sh", mnt])

    def test_exec_start_pre_clears_a_stale_mount_and_only_a_stale_one(self):
        p = self.formatted("64M")
        m = self.mount(p)
        # a live mount is left alone
        r = self.exec_start_pre_cleanup(m.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(is_mounted(m.mnt))
        self.assertTrue(os.path.isdir(m.mnt))
        # the daemon dies: "Transport endpoint is not connected" -- after
        # "Software caused connection abort" or "Operation canceled" for
        # requests the kernel had queued on the dead daemon's io_uring while
        # it tore it down
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
        with self.assertRaises(OSError) as cm:
            os.statvfs(m.mnt)
        self.assertIn(cm.exception.errno, (errno.ENOTCONN, errno.ECONNABORTED, errno.ECANCELED))
        r = self.exec_start_pre_cleanup(m.mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(is_mounted(m.mnt))
        # and the next start mounts there again
        m2 = self.mount(p, m.mnt)
        self.assertTrue(m2.is_mounted())
        self.unmount_clean(m2)
        self.assertFsckClean(p)


class FstabTests(RegionTestCase):

    def test_mount_fuse3_with_fstab_options_mounts_and_unmounts(self):
        helper = shutil.which("mount.fuse3") or "/sbin/mount.fuse3"
        self.assertTrue(os.access(helper, os.X_OK), "mount.fuse3 missing (package fuse3)")
        p = self.formatted("64M")
        mnt = self.mountpoint()
        env = dict(os.environ, PATH=os.path.dirname(DAEMON) + ":" + os.environ.get("PATH", ""))
        # what mount(8) runs for "REGION MNT fuse.pmfuse defaults,nofail,x-systemd.automount"
        r = subprocess.run([helper, p, mnt, "-t", "pmfuse", "-o",
                            "defaults,nofail,x-systemd.automount,_netdev"],
                           env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertTrue(is_mounted(mnt))
        ent = mount_entry(mnt)
        self.assertEqual(ent[0], "fuse.pmfuse")
        self.assertEqual(ent[1], p)
        write_file(os.path.join(mnt, "from-fstab"), b"mounted by mount.fuse3", fsync=True)
        self.assertEqual(read_file(os.path.join(mnt, "from-fstab")), b"mounted by mount.fuse3")
        pids = daemon_pids_for(p)
        self.assertEqual(len(pids), 1, pids)
        self.assertEqual(run(["umount", mnt]).returncode, 0)
        self.assertTrue(wait_until(lambda: pid_gone(pids[0]), 20), "daemon did not exit")
        self.assertFsckClean(p)
        m = self.mount(p)
        self.assertEqual(read_file(os.path.join(m.mnt, "from-fstab")), b"mounted by mount.fuse3")
        self.unmount_clean(m)


    def test_a_region_path_with_commas_and_spaces_mounts_under_its_name(self):
        src = self.formatted("64M")
        p = os.path.join(os.path.dirname(src), "pmfuse test,region,%s" % os.urandom(3).hex())
        os.rename(src, p)
        self.regions.append(p)
        m = self.mount(p)
        fstype, source = mount_entry(m.mnt)[:2]
        self.assertEqual((fstype, source.replace("\\040", " ")), ("fuse.pmfuse", p))
        write_file(os.path.join(m.mnt, "f"), b"comma")
        self.unmount_clean(m)
        self.assertFsckClean(p)


class UnmountRemountTests(RegionTestCase):
    """umount returns once the kernel has detached the mount, while the
    daemon is still closing the region (and holds its lock) for a moment:
    a mount, fsck or mkfs right after it waits for that daemon instead of
    failing "in use" -- and a region really in use is still refused."""

    CYCLES = 100

    def cli_mount(self, region, mnt):
        return subprocess.run([DAEMON, region, mnt], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)

    def test_umount_then_mount_or_fsck_at_once_never_fails(self):
        p = self.formatted("64M")
        mnt = self.mountpoint()
        self.addCleanup(lambda: is_mounted(mnt) and run(["umount", "-l", mnt]))
        r = self.cli_mount(p, mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        waits = 0
        for i in range(self.CYCLES):
            # something to write back at each unmount
            write_file(os.path.join(mnt, "f%d" % (i % 10)), b"cycle %d" % i)
            self.assertEqual(run(["umount", mnt]).returncode, 0)
            r = self.cli_mount(p, mnt)
            self.assertEqual(r.returncode, 0, "mount %d right after umount: %s" % (i, r.stderr))
            waits += "waiting" in r.stderr
        for i in range(self.CYCLES):
            self.assertEqual(run(["umount", mnt]).returncode, 0)
            rc, out = fsck(p, "-n")
            self.assertEqual(rc, FSCK_OK, "fsck %d right after umount: %s" % (i, out))
            waits += "waiting" in out
            r = self.cli_mount(p, mnt)
            self.assertEqual(r.returncode, 0, r.stderr)
        # the race was there to lose: the wait is what won it
        self.assertGreater(waits, 0, "no run found the region still held")
        for i in range(10):
            self.assertEqual(read_file(os.path.join(mnt, "f%d" % i)),
                             b"cycle %d" % (self.CYCLES - 10 + i))

        # mounted: refused at once, by the daemon, fsck and mkfs alike
        other = self.mountpoint()
        r = self.cli_mount(p, other)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("in use", r.stderr)
        self.assertNotIn("waiting", r.stderr)
        rc, out = fsck(p, "-n")
        self.assertEqual(rc, 8, out)
        self.assertIn("in use", out)
        self.assertNotIn("waiting", out)
        r = run([MKFS, "-f", "-q", p])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("in use", r.stderr)
        self.assertNotIn("waiting", r.stderr)
        pids = daemon_pids_for(p)
        self.assertEqual(run(["umount", mnt]).returncode, 0)
        self.assertTrue(wait_until(lambda: all(pid_gone(x) for x in pids), 20))
        self.assertFsckClean(p)

    def test_a_region_locked_by_another_program_is_refused_at_once(self):
        import fcntl
        p = self.formatted("64M")
        with open(p, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)	# as fsck or mkfs would hold it
            r = self.cli_mount(p, self.mountpoint())
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("in use", r.stderr)
            self.assertNotIn("waiting", r.stderr)
            rc, out = fsck(p, "-n")
            self.assertEqual(rc, 8, out)
            self.assertNotIn("waiting", out)


class LogTests(RegionTestCase):

    def run_daemon(self, region, mnt, opts, env=None, stderr_path=None):
        """Mount in the foreground with stderr at stderr_path; return (proc, path)."""
        path = stderr_path or os.path.join(self.workdir, "log-%s.err" % os.urandom(3).hex())
        with open(path, "wb") as err:
            cmd = [DAEMON, region, mnt, "-f"] + (["-o", opts] if opts else [])
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err,
                                    stderr=err, env=env, start_new_session=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        wait_until(lambda: is_mounted(mnt) or proc.poll() is not None, 15)
        return proc, path

    def stop(self, proc, mnt):
        self.assertEqual(run([FUSERMOUNT, "-u", mnt]).returncode, 0)
        self.assertEqual(proc.wait(timeout=30), 0)

    def test_info_is_the_default_and_err_silences_mount_and_unmount(self):
        p = self.formatted("64M")
        mnt = self.mountpoint()
        proc, path = self.run_daemon(p, mnt, None)
        self.stop(proc, mnt)
        log = read_file(path).decode()
        self.assertRegex(log, r"(?m)^pmfuse: mounted %s on %s \(writeback mode, "
                         r"\w+ granularity, \d+ of \d+ data blocks free\)$" % (re.escape(p), mnt))
        self.assertRegex(log, r"(?m)^pmfuse: unmounted: 0 dirty page\(s\) flushed")
        proc, path = self.run_daemon(p, mnt, "log_level=err")
        self.stop(proc, mnt)
        self.assertEqual(read_file(path), b"")

    def test_an_unknown_log_level_is_a_usage_error(self):
        p = self.formatted("64M")
        mnt = self.mountpoint()
        proc, path = self.run_daemon(p, mnt, "log_level=chatty")
        self.assertEqual(proc.wait(timeout=10), 2)
        self.assertIn("unknown log_level 'chatty'", read_file(path).decode())
        self.assertFalse(is_mounted(mnt))

    def test_journal_stream_gets_priority_prefixes(self):
        p = self.formatted("64M")
        mnt = self.mountpoint()
        path = os.path.join(self.workdir, "journal.err")
        open(path, "wb").close()
        st = os.stat(path)
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        proc, _ = self.run_daemon(p, mnt, "log_level=debug", env=env, stderr_path=path)
        self.stop(proc, mnt)
        # a second daemon on the mounted region is refused: an error line
        lines = read_file(path).decode().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[0-7]>", "line without a priority prefix")
        self.assertTrue(any(line.startswith("<6>mounted ") for line in lines), lines)
        # a refusal is an error: <3>
        busy = self.formatted("64M")
        m = self.mount(busy)
        proc, _ = self.run_daemon(busy, self.mountpoint(), None, env=env, stderr_path=path)
        self.assertNotEqual(proc.wait(timeout=15), 0)
        self.unmount_clean(m)
        self.assertIn("<3>cannot mount %s: " % busy, read_file(path).decode())

    def test_an_unclean_shutdown_is_logged_as_recovered(self):
        p = self.formatted("64M")
        m = self.mount(p)
        write_file(os.path.join(m.mnt, "x"), b"before the crash", fsync=True)
        m.kill()
        m2 = self.mount(p, m.mnt)
        self.assertIn("%s was not cleanly unmounted: pool recovered" % p, m2.log())
        self.assertEqual(read_file(os.path.join(m2.mnt, "x")), b"before the crash")
        self.unmount_clean(m2)
        m3 = self.mount(p, m.mnt)
        self.assertNotIn("not cleanly unmounted", m3.log())
        self.unmount_clean(m3)

    def test_a_damaged_directory_is_refused_with_eio_and_logged_once(self):
        p = self.formatted("64M")
        m = self.mount(p)
        name = "zq-damaged-entry-7fe1"
        os.mkdir(os.path.join(m.mnt, "d"))
        write_file(os.path.join(m.mnt, "d", name), b"x")
        write_file(os.path.join(m.mnt, "intact"), b"still here")
        self.unmount_clean(m)
        with open(p, "r+b") as f:
            data = f.read()
            off = data.find(name.encode())
            self.assertGreater(off, 0)
            self.assertEqual(data.find(name.encode(), off + 1), -1)
            hash_off = off - 24		# struct pmfuse_dirent: ino, hash, ...
            f.seek(hash_off)
            orig = f.read(1)
            f.seek(hash_off)
            f.write(bytes([orig[0] ^ 0xff]))
        m = self.mount(p, m.mnt)
        for _ in range(3):
            with self.assertRaises(OSError) as cm:
                os.listdir(os.path.join(m.mnt, "d"))
            self.assertEqual(cm.exception.errno, 5)	# EIO
        self.assertEqual(read_file(os.path.join(m.mnt, "intact")), b"still here")
        self.unmount_clean(m)
        refusals = [ln for ln in m.log().splitlines() if "request refused with EIO" in ln]
        self.assertEqual(len(refusals), 1, m.log())
        self.assertTrue(refusals[0].startswith("pmfuse: error: inode "), refusals[0])
        rc, _ = fsck(p, "-n")
        self.assertEqual(rc, 4)
        with open(p, "r+b") as f:
            f.seek(hash_off)
            f.write(orig)
        self.assertFsckClean(p)


NOBODY = 65534


@unittest.skipUnless(os.path.exists(FUSERMOUNT) or shutil.which("fusermount3"), "fusermount3")
class UnprivilegedTests(RegionTestCase):

    def test_a_normal_user_formats_mounts_uses_and_unmounts(self):
        fm = shutil.which("fusermount3")
        self.assertTrue(os.stat(fm).st_mode & 0o4000, "fusermount3 must be setuid root")
        # udev makes /dev/fuse 0666 on a normal system; containers may not
        mode = os.stat("/dev/fuse").st_mode & 0o777
        if mode != 0o666:
            os.chmod("/dev/fuse", 0o666)
            self.addCleanup(os.chmod, "/dev/fuse", mode)
        # the user's own copies of the tools, outside root-only directories
        home = tempfile.mkdtemp(prefix="pmfuse-user-", dir="/dev/shm")
        self.addCleanup(shutil.rmtree, home, True)
        for b in (MKFS, FSCK, DAEMON):
            shutil.copy(b, home)
        os.chown(home, NOBODY, NOBODY)
        os.chmod(home, 0o755)
        region = os.path.join(home, "region")
        mnt = os.path.join(home, "mnt")

        def as_nobody(cmd, **kw):
            def drop():
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            env = dict(os.environ, HOME=home)
            return subprocess.run(cmd, preexec_fn=drop, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=60, **kw)

        r = as_nobody(["mkdir", mnt])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = as_nobody([os.path.join(home, "mkfs.pmfuse"), "-q", "-s", "64M", region])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.stat(region).st_uid, NOBODY)
        # without -f the daemon returns once mounted (through fusermount3)
        r = as_nobody([os.path.join(home, "pmfuse"), region, mnt])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(lambda: is_mounted(mnt) and run([FUSERMOUNT, "-u", "-z", mnt]))
        self.assertTrue(is_mounted(mnt))
        ent = mount_entry(mnt)
        self.assertEqual(ent[0], "fuse.pmfuse")
        pids = daemon_pids_for(region)
        self.assertEqual(len(pids), 1)
        self.assertEqual(os.stat("/proc/%d" % pids[0]).st_uid, NOBODY)
        r = as_nobody(["sh", "-c", "echo user-data > %s/f && cat %s/f && stat -c %%u %s/f"
                       % (mnt, mnt, mnt)])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().split(), ["user-data", str(NOBODY)])
        # other users (root included) are kept out without allow_other
        with self.assertRaises(PermissionError):
            os.listdir(mnt)
        r = as_nobody([fm, "-u", mnt])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(wait_until(lambda: pid_gone(pids[0]), 20), "daemon did not exit")
        r = as_nobody([os.path.join(home, "fsck.pmfuse"), "-n", region])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class InstallTests(unittest.TestCase):

    def test_meson_install_puts_everything_in_its_place(self):
        dest = tempfile.mkdtemp(prefix="pmfuse-install-")
        self.addCleanup(shutil.rmtree, dest, True)
        r = run(["meson", "install", "--no-rebuild", "-C", BUILD, "--destdir", dest],
                timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        found = {}
        for root, _, files in os.walk(dest):
            for f in files:
                found[f] = os.path.relpath(os.path.join(root, f), dest)
        for prog in ("pmfuse", "mkfs.pmfuse", "fsck.pmfuse"):
            self.assertIn(prog, found)
            self.assertRegex(found[prog], r"(^|/)sbin/%s$" % re.escape(prog))
            self.assertTrue(os.access(os.path.join(dest, found[prog]), os.X_OK))
        self.assertIn("pmfuse@.service", found)
        self.assertRegex(found["pmfuse@.service"], r"systemd/system/pmfuse@\.service$")
        with open(os.path.join(dest, found["pmfuse@.service"])) as f:
            unit = f.read()
        sbin = "/" + os.path.dirname(found["pmfuse"])
        self.assertIn("ExecStart=%s/pmfuse ${REGION} %%f -f $OPTIONS" % sbin, unit)
        self.assertIn("pmfuse.conf.example", found)
        for page in ("pmfuse.8", "mkfs.pmfuse.8", "fsck.pmfuse.8"):
            if os.path.exists(os.path.join(REPO, "daemon" if page == "pmfuse.8" else "mkfs",
                                           page)):
                self.assertIn(page, found)
                self.assertRegex(found[page], r"share/man/man8/%s$" % re.escape(page))


if __name__ == "__main__":
    main()
