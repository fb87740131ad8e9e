"""
Mount-level test harness for pmfuse.

Every test gets a freshly formatted region file under /dev/shm and the
pmfuse daemon running in the foreground (``pmfuse REGION MNT -f``) as a
child process.  After every test the mount is unmounted cleanly (the daemon
must exit 0) and ``fsck.pmfuse -n`` must report the region clean: the
filesystem has to be consistent after every test, error paths included.

Environment:
  PMFUSE_BUILD           meson build directory holding daemon/pmfuse and
                         mkfs/{mkfs,fsck}.pmfuse (default: <repo>/build)
  PMFUSE_TEST_KEEP       if set, keep region files and daemon logs of
                         failed tests (their paths are printed)
  PMFUSE_TEST_REFERENCE  "ext4": run the tests against ext4 on a loop device
                         instead of pmfuse -- only to validate the tests
                         themselves against a reference filesystem;
                         pmfuse-specific tests are skipped in that mode.

Run a module directly: ``python3 tests/mount/test_data.py [-k pattern]``.
"""

import ctypes
import ctypes.util
import gc
import hashlib
import itertools
import os
import pickle
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(os.environ.get("PMFUSE_BUILD") or os.path.join(REPO, "build"))
MKFS = os.path.join(BUILD, "mkfs", "mkfs.pmfuse")
FSCK = os.path.join(BUILD, "mkfs", "fsck.pmfuse")
# PMFUSE_DAEMON: another daemon binary (the ThreadSanitizer build)
DAEMON = os.environ.get("PMFUSE_DAEMON") or os.path.join(BUILD, "daemon", "pmfuse")
FUSERMOUNT = shutil.which("fusermount3") or "fusermount3"

REFERENCE = os.environ.get("PMFUSE_TEST_REFERENCE", "")
# more -o options for every mount (a suite run again with "nouring")
EXTRA_OPTS = [o for o in os.environ.get("PMFUSE_TEST_OPTS", "").split(",") if o]
KEEP = bool(os.environ.get("PMFUSE_TEST_KEEP"))

SHM = "/dev/shm"
MOUNT_TIMEOUT = 10.0
UNMOUNT_TIMEOUT = 30.0

# fsck.pmfuse exit codes
FSCK_OK = 0
FSCK_ERRORS = 4
FSCK_OPERATIONAL = 8
FSCK_USAGE = 16

PMFUSE_MAGIC = struct.pack("<Q", 0x3145535546504D50)  # b"PMFUSE1\0"
MIN_REGION = 32 << 20

_counter = itertools.count()

# everything still live, for the emergency cleanup on SIGTERM (meson timeout)
_LIVE_MOUNTS = set()
_LIVE_REGIONS = set()
_LIVE_DIRS = set()      # (path, is_mountpoint)


class HarnessError(Exception):
    pass


# ---------------------------------------------------------------- utilities

def parse_size(s):
    """'256M' -> bytes (K/M/G/T suffixes, powers of two)."""
    if isinstance(s, int):
        return s
    s = str(s).strip()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1].upper() in mult:
        return int(s[:-1]) * mult[s[-1].upper()]
    return int(s)


def run(cmd, timeout=120, input=None, env=None):
    """Run a command, capture text output; never raises on exit status."""
    try:
        return subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              errors="replace", timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise HarnessError("command timed out after %ss: %s" % (timeout, cmd)) from e


DAX_LIB = os.path.join(BUILD, "lib", "libpmfuse-dax.so")


def dax_preload_env(**extra):
    """The environment of a process run under libpmfuse-dax.  A sanitized
    build's library needs its sanitizer runtimes loaded first."""
    pre = []
    out = subprocess.run(["ldd", DAX_LIB], capture_output=True, text=True).stdout
    for name in ("libasan.so", "libubsan.so"):
        for line in out.splitlines():
            if name in line and "=>" in line:
                pre.append(line.split("=>")[1].split()[0])
                break
    env = dict(os.environ, LD_PRELOAD=" ".join(pre + [DAX_LIB]))
    env["ASAN_OPTIONS"] = "detect_leaks=0:exitcode=86"
    env.update(extra)
    return env


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data, mode=0o644, fsync=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def pread_all(fd, length, offset):
    out = bytearray()
    while len(out) < length:
        b = os.pread(fd, length - len(out), offset + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def new_region_path(tag="region"):
    p = os.path.join(SHM, "pmfuse-test-%d-%d-%s-%s" % (
        os.getpid(), next(_counter), tag, os.urandom(3).hex()))
    _LIVE_REGIONS.add(p)
    return p


def remove_quietly(path):
    _LIVE_REGIONS.discard(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def mkfs(path, *args, timeout=300):
    """Run mkfs.pmfuse ARGS PATH; return the CompletedProcess."""
    if REFERENCE == "ext4":
        size = None
        a = list(args)
        if "-s" in a:
            size = parse_size(a[a.index("-s") + 1])
        if size is not None and not os.path.exists(path):
            with open(path, "wb") as f:
                f.truncate(size)
        return run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256", "-O", "ea_inode",
                    "-N", str(max(16384, os.path.getsize(path) // 16384)), path],
                   timeout=timeout)
    return run([MKFS] + [str(a) for a in args] + [path], timeout=timeout)


# FUSE over io_uring is off unless the fuse module's enable_uring is set (it
# only lets a daemon ask for it).  The suite runs with it on, so the daemon's
# ring transport serves most requests; PMFUSE_TEST_URING=0 leaves it off.
URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def kernel_has_uring():
    return os.path.exists(URING_PARAM)


def set_kernel_uring(on):
    """Set fuse.enable_uring; return the previous setting (None: no such knob)."""
    try:
        with open(URING_PARAM) as f:
            old = f.read().strip() == "Y"
        with open(URING_PARAM, "w") as f:
            f.write("Y" if on else "N")
        return old
    except OSError:
        return None


if not REFERENCE and os.geteuid() == 0 and os.environ.get("PMFUSE_TEST_URING", "1") != "0":
    set_kernel_uring(True)


# Test regions stay sparse (DESIGN §3: real regions are reserved at mkfs).
os.environ.setdefault("PMEMOBJ_CONF", "fallocate.at_create=0")
# Every mount that takes the clean-unmount record also rebuilds and compares
# (record.c), refusing to mount if they differ: each test checks the record.
os.environ.setdefault("PMFUSE_VERIFY_RECORD", "1")
# At page granularity the daemon moves file data through the region's file
# descriptor or through its mapping, by what a page fault costs on the host
# (region.c use_fd_io): tests choose, so that both run on every host.  The
# fd by default; test_data_nouring and the crash explorer's -o sync runs
# take the mapping (meson.build, crashtest.py).
os.environ.setdefault("PMFUSE_REGION_IO", "fd")


def make_region(size="256M", *args, tag="region"):
    """Create and format a fresh region file; return its path."""
    path = new_region_path(tag)
    r = mkfs(path, "-q", "-s", str(size), *args)
    if r.returncode != 0:
        remove_quietly(path)
        raise HarnessError("mkfs.pmfuse -s %s %s failed (exit %d): %s%s" % (
            size, path, r.returncode, r.stdout, r.stderr))
    return path


def fsck(path, *args, timeout=300):
    """Run fsck.pmfuse ARGS PATH; return (exit code, stdout + stderr)."""
    if REFERENCE == "ext4":
        r = run(["e2fsck", "-f", "-n", path], timeout=timeout)
        out = r.stdout + r.stderr
        # the reference mount removes lost+found so that listings match
        if r.returncode == 4 and "lost+found not found" in out and out.count("? no") == 1:
            return 0, out
        return r.returncode, out
    r = run([FSCK] + [str(a) for a in args] + [path], timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def _unescape_mountinfo(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mount_entry(mountpoint):
    """(fstype, source, options) of the topmost mount at mountpoint, or None."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            try:
                sep = parts.index("-")
            except ValueError:
                continue
            if _unescape_mountinfo(parts[4]) == mountpoint:
                found = (parts[sep + 1], parts[sep + 2], parts[5])
    return found


def is_mounted(mountpoint):
    return mount_entry(mountpoint) is not None


def wait_until(pred, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def fs_stats(mnt):
    """The daemon's counters (the stats xattr on the root), numbers as ints."""
    out = {}
    for line in os.getxattr(mnt, "user.pmfuse.stats").decode().splitlines():
        k, v = line.split(" ", 1)
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def requests_during(mnt, op, fn, *args):
    """How many requests of FUSE operation op (the stats' req_<op>) fn(*args)
    caused, net of the GETXATTRs that reading the stats costs itself."""
    key = "req_" + op
    first = fs_stats(mnt)[key]
    own = fs_stats(mnt)[key] - first       # what one stats read adds to this counter
    before = first + own
    fn(*args)
    return fs_stats(mnt)[key] - before - own


def statvfs_free_bytes(path):
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def daemon_pids_for(region):
    """PIDs of pmfuse daemons whose command line names region."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"pmfuse" and region.encode() in argv:
            pids.append(int(d))
    return pids


# ---------------------------------------------------------------- the mount

class Mount:
    """One pmfuse daemon in the foreground serving REGION at MOUNTPOINT."""

    def __init__(self, region, mountpoint, opts=(), args=(), log_dir=None):
        self.region = region
        self.mnt = mountpoint
        self.opts = list(opts)
        self.args = list(args)
        self.log_dir = log_dir or tempfile.gettempdir()
        self.proc = None
        self.log_path = None
        self.returncode = None

    # -- lifecycle
    def command(self):
        cmd = [DAEMON, self.region, self.mnt, "-f"] + self.args
        opts = self.opts + [o for o in EXTRA_OPTS if o not in self.opts]
        if opts:
            cmd += ["-o", ",".join(opts)]
        return cmd

    def start(self, timeout=MOUNT_TIMEOUT):
        if REFERENCE == "ext4":
            r = run(["mount", "-t", "ext4", "-o", "loop", self.region, self.mnt])
            if r.returncode:
                raise HarnessError("reference mount failed: " + r.stderr)
            lf = os.path.join(self.mnt, "lost+found")
            if os.path.isdir(lf) and not os.listdir(lf):
                os.rmdir(lf)
            return self
        self.log_path = os.path.join(self.log_dir, "daemon-%d-%s.log" % (
            next(_counter), os.path.basename(self.region)))
        log = open(self.log_path, "wb")
        _LIVE_MOUNTS.add(self)
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            ent = mount_entry(self.mnt)
            if ent is not None and ent[0].startswith("fuse"):
                return self
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise HarnessError("pmfuse exited with %d before the mount was live:\n%s"
                                   % (rc, self.log()))
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError("mount did not appear within %.0fs:\n%s"
                                   % (timeout, self.log()))
            time.sleep(0.01)

    def is_mounted(self):
        return is_mounted(self.mnt)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def unmount(self, timeout=UNMOUNT_TIMEOUT):
        """fusermount3 -u; wait for the daemon; return its exit code.

        Raises HarnessError if the unmount itself fails (e.g. busy)."""
        if REFERENCE == "ext4":
            r = run(["umount", self.mnt])
            if r.returncode:
                raise HarnessError("umount failed: " + r.stderr)
            self.returncode = 0
            return 0
        r = run([FUSERMOUNT, "-u", self.mnt], timeout=timeout)
        if r.returncode != 0:
            gc.collect()    # a leaked scandir iterator or file object?
            r = run([FUSERMOUNT, "-u", self.mnt], timeout=timeout)
        if r.returncode != 0:
            raise HarnessError("fusermount3 -u %s failed (exit %d): %s"
                               % (self.mnt, r.returncode, r.stderr.strip()))
        return self.wait(timeout)

    def wait(self, timeout=UNMOUNT_TIMEOUT):
        if self.proc is None:
            return self.returncode
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise HarnessError("pmfuse did not exit within %.0fs after unmount:\n%s"
                               % (timeout, self.log()))
        return self.returncode

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self):
        """SIGKILL the daemon and lazily detach its dead mount."""
        if REFERENCE == "ext4":
            raise unittest.SkipTest("crash tests need the pmfuse daemon")
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.returncode = self.proc.wait()
        self.lazy_unmount()

    def lazy_unmount(self):
        if self.is_mounted():
            run([FUSERMOUNT, "-u", "-z", self.mnt], timeout=30)
        if self.is_mounted():
            run(["umount", "-l", self.mnt], timeout=30)
        if self.is_mounted():
            raise HarnessError("could not detach %s" % self.mnt)

    def force_cleanup(self):
        """Best effort, for cleanups: leave no mount and no daemon behind."""
        _LIVE_MOUNTS.discard(self)
        if REFERENCE == "ext4":
            if self.is_mounted():
                if run(["umount", self.mnt]).returncode:
                    run(["umount", "-l", self.mnt])
            return
        if self.is_mounted() and self.alive():
            if run([FUSERMOUNT, "-u", self.mnt], timeout=30).returncode == 0:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            self.lazy_unmount()
        except HarnessError:
            pass

    def log(self, tail=4000):
        if not self.log_path:
            return "(no daemon log)"
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return "(no daemon log)"
        return data[-tail:].decode(errors="replace")


# ---------------------------------------------------------- as another user

def as_user(fn, *args, uid=1000, gid=1000, groups=(), umask=0o022):
    """Run fn(*args) in a forked child with the given credentials.

    Returns fn's (picklable) result; an OSError in the child is re-raised
    here with the same errno, any other exception becomes AssertionError."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child
        code = 0
        try:
            os.close(r)
            try:
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
                os.umask(umask)
                res = ("ok", fn(*args))
            except OSError as e:
                res = ("oserror", e.errno, e.strerror, e.filename)
            except BaseException as e:   # noqa: B902
                res = ("exc", repr(e))
            data = pickle.dumps(res)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError("as_user child died (wait status %#x)" % status)
    res = pickle.loads(b"".join(chunks))
    if res[0] == "oserror":
        raise OSError(res[1], "%s (as uid %d)" % (res[2], uid), res[3])
    if res[0] == "exc":
        raise AssertionError("as_user child raised " + res[1])
    return res[1]


# ------------------------------------------------------------ libc helpers

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_CREATE = 1
XATTR_REPLACE = 2


def _sys_renameat2():
    m = platform.machine()
    if m in ("x86_64", "amd64"):
        return 316
    if m in ("aarch64", "arm64"):
        return 276
    raise unittest.SkipTest("renameat2 syscall number unknown for " + m)


def _check(ret, what):
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))
    return ret


def renameat2(old, new, flags):
    _libc.syscall.restype = ctypes.c_long
    ret = _libc.syscall(ctypes.c_long(_sys_renameat2()),
                        ctypes.c_int(AT_FDCWD), ctypes.c_char_p(os.fsencode(old)),
                        ctypes.c_int(AT_FDCWD), ctypes.c_char_p(os.fsencode(new)),
                        ctypes.c_uint(flags))
    return _check(ret, "renameat2")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path, atime, mtime, flags=0):
    """atime/mtime: (sec, nsec) tuples, UTIME_NOW or UTIME_OMIT."""
    def ts(v):
        if v in (UTIME_NOW, UTIME_OMIT):
            return _Timespec(0, v)
        return _Timespec(v[0], v[1])
    times = (_Timespec * 2)(ts(atime), ts(mtime))
    return _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags), "utimensat")


def getxattr_raw(path, name, size):
    """getxattr(2) with an explicit buffer size; returns the length."""
    buf = ctypes.create_string_buffer(max(size, 1))
    _libc.getxattr.restype = ctypes.c_ssize_t
    ret = _libc.getxattr(os.fsencode(path), os.fsencode(name), buf, ctypes.c_size_t(size))
    return _check(ret, "getxattr")


def fallocate(fd, mode, offset, length):
    """fallocate(2) itself: no glibc emulation by writing zeros."""
    _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return _check(_libc.fallocate(fd, mode, offset, length), "fallocate")


def getdents(path):
    """[(d_ino, d_type, name)] of a directory, '.' and '..' included."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    out = []
    try:
        buf = ctypes.create_string_buffer(1 << 16)
        nr = 217 if platform.machine() in ("x86_64", "amd64") else 61
        _libc.syscall.restype = ctypes.c_long
        while True:
            n = _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(fd), buf,
                                     ctypes.c_uint(len(buf))), "getdents64")
            if n == 0:
                break
            raw, pos = buf.raw[:n], 0
            while pos < n:
                ino, _off, reclen, typ = struct.unpack_from("<QqHB", raw, pos)
                name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
                out.append((ino, typ, os.fsdecode(name)))
                pos += reclen
    finally:
        os.close(fd)
    return out


# ------------------------------------------------------------- test cases

def pmfuse_only(fn):
    """Mark a test that checks pmfuse-specific behaviour (skipped only in
    PMFUSE_TEST_REFERENCE mode, never against pmfuse)."""
    return unittest.skipIf(bool(REFERENCE), "pmfuse-specific")(fn)


class PmfuseTestCase(unittest.TestCase):
    """Each test: a fresh region + a live mount at self.mnt.

    tearDown unmounts (the daemon must exit 0) and requires
    fsck.pmfuse -n to exit 0."""

    region_size = "256M"
    mkfs_args = ()
    mount_opts = ()
    test_timeout = 120        # watchdog: SIGKILL the daemon after this
    check_fsck = True

    def setUp(self):
        os.umask(0o022)
        self.workdir = tempfile.mkdtemp(prefix="pmfuse-test-work-")
        _LIVE_DIRS.add((self.workdir, False))
        self.addCleanup(self._cleanup_workdir)
        self.region = make_region(self.region_size, *self.mkfs_args)
        self.addCleanup(self._cleanup_region, self.region)
        self.mnt = os.path.realpath(tempfile.mkdtemp(prefix="pmfuse-test-mnt-"))
        _LIVE_DIRS.add((self.mnt, True))
        self.addCleanup(self._cleanup_mountpoint, self.mnt)
        self.mounts = []
        self.addCleanup(self._cleanup_mounts)
        self.watchdog_fired = False
        self._watchdog = threading.Timer(self.test_timeout, self._watchdog_fire)
        self._watchdog.daemon = True
        self._watchdog.start()
        self.addCleanup(self._watchdog.cancel)
        self.m = self.mount()

    # -- mounts
    def mount(self, opts=None, region=None, mnt=None):
        m = Mount(region or self.region, mnt or self.mnt,
                  opts=self.mount_opts if opts is None else opts,
                  log_dir=self.workdir)
        self.mounts.append(m)
        m.start()
        return m

    def unmount(self, m=None):
        """Clean unmount; assert the daemon exits 0."""
        m = m or self.m
        rc = m.unmount()
        self.assertEqual(rc, 0, "pmfuse exited with %s on unmount:\n%s" % (rc, m.log()))

    def remount(self, check_fsck=True):
        """Unmount cleanly, optionally require a clean fsck, mount again."""
        self.unmount()
        if check_fsck:
            self.assertFsckClean()
        self.m = self.mount()
        return self.m

    def crash(self):
        """SIGKILL the daemon; lazily unmount the dead mount."""
        self.m.kill()

    def crash_with_open_orphan(self, fd):
        """SIGKILL the daemon while fd (a file without a name) is open, then
        close fd."""
        try:
            self.crash()
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    def assertReclaimedAtMount(self, fresh, what="the orphan"):
        """The next mount reclaims what a crash left nameless: fsck clean,
        nothing listed, blocks and inodes as in `fresh` (statvfs before)."""
        self.assertFsckClean()
        self.m = self.mount()
        self.assertEqual(os.listdir(self.mnt), [])
        ok = wait_until(lambda: os.statvfs(self.mnt).f_bfree == fresh.f_bfree, 5)
        st = os.statvfs(self.mnt)
        self.assertTrue(ok, "%s's blocks not reclaimed: bfree %d, fresh %d"
                        % (what, st.f_bfree, fresh.f_bfree))
        self.assertEqual(st.f_ffree, fresh.f_ffree, "%s's inode not reclaimed" % what)

    def assertFsckClean(self, region=None):
        rc, out = fsck(region or self.region, "-n")
        self.assertEqual(rc, FSCK_OK, "fsck.pmfuse -n exited %d:\n%s" % (rc, out[-4000:]))

    def p(self, *parts):
        return os.path.join(self.mnt, *parts)

    def tearDown(self):
        self._watchdog.cancel()
        if self.watchdog_fired:
            self.fail("watchdog: test exceeded %ss, daemon was SIGKILLed" % self.test_timeout)
        m = self.m
        if m is not None and m.is_mounted():
            if REFERENCE != "ext4" and not m.alive():
                rc = m.proc.poll()
                m.lazy_unmount()
                self.fail("pmfuse died during the test (exit %s):\n%s" % (rc, m.log()))
            self.unmount(m)
        if self.check_fsck:
            self.assertFsckClean()

    # -- cleanups (run even when setUp/test/tearDown failed)
    def _watchdog_fire(self):
        self.watchdog_fired = True
        sys.stderr.write("\nWATCHDOG: %s exceeded %ss, killing daemon(s)\n"
                         % (self.id(), self.test_timeout))
        for m in list(getattr(self, "mounts", [])):
            try:
                m.signal(signal.SIGKILL)
            except OSError:
                pass

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        return outcome is not None and not getattr(outcome, "success", True)

    def _cleanup_mounts(self):
        for m in reversed(self.mounts):
            m.force_cleanup()
        if KEEP and self._failed():
            for m in self.mounts:
                if m.log_path:
                    sys.stderr.write("kept daemon log: %s\n" % m.log_path)

    def _cleanup_region(self, path):
        if KEEP and self._failed():
            sys.stderr.write("kept region: %s\n" % path)
            return
        remove_quietly(path)

    def _cleanup_mountpoint(self, path):
        try:
            if not is_mounted(path):
                os.rmdir(path)
        except OSError:
            pass

    def _cleanup_workdir(self):
        if KEEP and self._failed():
            return
        shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------ entry point

def check_prerequisites():
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root")
    if REFERENCE:
        if REFERENCE != "ext4":
            problems.append("PMFUSE_TEST_REFERENCE must be 'ext4'")
        return problems
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse is missing")
    for b in (MKFS, FSCK, DAEMON):
        if not os.access(b, os.X_OK):
            problems.append("missing binary %s (set PMFUSE_BUILD to the meson build dir)" % b)
    if not shutil.which("fusermount3"):
        problems.append("fusermount3 not found (package fuse3)")
    return problems


def _emergency_cleanup(signum=None, frame=None):
    for m in list(_LIVE_MOUNTS):
        try:
            m.force_cleanup()
        except Exception:   # noqa: BLE001 - best effort
            pass
    for r in list(_LIVE_REGIONS):
        if not KEEP:
            remove_quietly(r)
    for d, is_mnt in sorted(_LIVE_DIRS, key=lambda t: not t[1]):
        if is_mnt:
            if not is_mounted(d):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        elif not KEEP:
            shutil.rmtree(d, ignore_errors=True)
    _LIVE_DIRS.clear()
    if signum is not None:
        sys.stderr.write("pmfuse mount tests: killed by signal %d, cleaned up\n" % signum)
        os._exit(1)


def main():
    signal.signal(signal.SIGTERM, _emergency_cleanup)
    signal.signal(signal.SIGHUP, _emergency_cleanup)
    problems = check_prerequisites()
    if problems:
        for p in problems:
            sys.stderr.write("pmfuse mount tests: %s\n" % p)
        sys.exit(1)
    try:
        prog = unittest.main(verbosity=2, exit=False)
    finally:
        _emergency_cleanup()
    res = prog.result
    failed = len(res.failures) + len(res.errors) + len(getattr(res, "unexpectedSuccesses", []))
    skipped = len(res.skipped)
    passed = res.testsRun - failed - skipped
    print("mount: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.stdout.flush()
    sys.exit(0 if res.wasSuccessful() and res.testsRun > 0 else 1)
