"""NFS for the tests and the benchmark: NFS-Ganesha serving a directory, and
a small client, libnfs (Debian's libnfs13) through ctypes.

Ganesha runs `ganesha.nfsd -F` with the example configuration the project
installs (systemd/ganesha-pmfuse.conf.example), its export path, port,
protocols, recovery directory and log replaced, bound to 127.0.0.1 only.

One NfsClient is one client session (one NFSv4 client id, its open state
and file handles), kept across whatever the test does to the server.

libnfs 4.0.0 (Debian 12) encodes an NFSv4 WRITE into a fixed 4 KiB
buffer: a WRITE of more than about 3.9 KiB fails in the client
("ZDR error: Failed to encode COMPOUND4args") before anything is sent,
on any server -- which is why its `nfs-cp` cannot copy a file of 4 KiB or
more into an NFSv4 export and leaves it empty.  This client writes in
WRITE_CHUNK pieces; reads have no such limit."""
import ctypes
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "systemd",
                       "ganesha-pmfuse.conf.example")
GANESHA = shutil.which("ganesha.nfsd") or "/usr/bin/ganesha.nfsd"
RPCBIND = shutil.which("rpcbind") or "/usr/sbin/rpcbind"
ADDR = "127.0.0.1"
PSEUDO = "/pm"
START_TIMEOUT = 60

WRITE_CHUNK = 3072
READ_CHUNK = 1 << 20
IN_FLIGHT = 32          # WRITEs kept in flight (each is one round trip)

_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class NfsError(OSError):
    pass


class _Url(ctypes.Structure):
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p),
                ("file", ctypes.c_char_p)]


class _Stat64(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks",
        "atime", "mtime", "ctime", "atime_nsec", "mtime_nsec", "ctime_nsec", "used")]


def _lib():
    lib = ctypes.CDLL("libnfs.so.13")
    vp, cp, u64, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int
    sig = {
        "nfs_init_context": (vp, []),
        "nfs_destroy_context": (None, [vp]),
        "nfs_get_error": (cp, [vp]),
        "nfs_set_version": (i, [vp, i]),
        "nfs_parse_url_dir": (ctypes.POINTER(_Url), [vp, cp]),
        "nfs_destroy_url": (None, [ctypes.POINTER(_Url)]),
        "nfs_set_timeout": (None, [vp, i]),
        "nfs_mount": (i, [vp, cp, cp]),
        "nfs_open2": (i, [vp, cp, i, i, ctypes.POINTER(vp)]),
        "nfs_open": (i, [vp, cp, i, ctypes.POINTER(vp)]),
        "nfs_close": (i, [vp, vp]),
        "nfs_pread": (i, [vp, vp, u64, u64, vp]),
        "nfs_pwrite": (i, [vp, vp, u64, u64, vp]),
        "nfs_pwrite_async": (i, [vp, vp, u64, u64, vp, _CB, vp]),
        "nfs_get_fd": (i, [vp]),
        "nfs_which_events": (i, [vp]),
        "nfs_service": (i, [vp, i]),
        "nfs_fsync": (i, [vp, vp]),
        "nfs_stat64": (i, [vp, cp, ctypes.POINTER(_Stat64)]),
        "nfs_unlink": (i, [vp, cp]),
        "nfs_mkdir": (i, [vp, cp]),
        "nfs_rename": (i, [vp, cp, cp]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


_LIB = None


def available():
    """None if the client library loads, else why not."""
    try:
        lib()
        return None
    except OSError as e:
        return "libnfs.so.13 (Debian's libnfs13): %s" % e


def lib():
    global _LIB
    if _LIB is None:
        _LIB = _lib()
    return _LIB


class NfsFile:
    def __init__(self, client, fh, path):
        self.c, self.fh, self.path = client, fh, path

    def pwrite(self, data, offset):
        """Write data at offset in WRITE_CHUNK pieces, IN_FLIGHT at a time."""
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        ctx, errors = self.c.ctx, []
        state = {"next": 0, "pending": 0}

        def done_cb(err, _nfs, _data, priv):
            state["pending"] -= 1
            if err < 0:
                errors.append((priv or 0, err))

        cb = _CB(done_cb)
        while state["next"] < len(data) or state["pending"]:
            while state["next"] < len(data) and state["pending"] < IN_FLIGHT and not errors:
                at = state["next"]
                n = min(WRITE_CHUNK, len(data) - at)
                if lib().nfs_pwrite_async(ctx, self.fh, offset + at, n, ctypes.byref(buf, at),
                                          cb, at) != 0:
                    self.c.fail(-1, "pwrite %s at %d" % (self.path, offset + at))
                state["next"] += n
                state["pending"] += 1
            if errors and not state["pending"]:
                break
            if state["pending"]:
                p = select.poll()
                p.register(lib().nfs_get_fd(ctx), lib().nfs_which_events(ctx))
                ev = p.poll(self.c.timeout_ms)
                if not ev:
                    raise NfsError(0, "NFS pwrite %s: no answer in %d ms"
                                   % (self.path, self.c.timeout_ms))
                if lib().nfs_service(ctx, ev[0][1]) < 0:
                    self.c.fail(-1, "pwrite %s (service)" % self.path)
        if errors:
            at, err = min(errors)
            raise NfsError(-err, "NFS pwrite %s at %d: %s" % (self.path, offset + at,
                                                               os.strerror(-err)))
        return len(data)

    def pread(self, length, offset):
        out = bytearray()
        buf = ctypes.create_string_buffer(min(length, READ_CHUNK) or 1)
        while len(out) < length:
            n = min(READ_CHUNK, length - len(out))
            r = lib().nfs_pread(self.c.ctx, self.fh, offset + len(out), n, buf)
            if r < 0:
                self.c.fail(r, "pread %s at %d" % (self.path, offset + len(out)))
            if r == 0:
                break
            out += buf.raw[:r]
        return bytes(out)

    def fsync(self):
        """COMMIT: the server's fsync of the file."""
        r = lib().nfs_fsync(self.c.ctx, self.fh)
        if r < 0:
            self.c.fail(r, "fsync (COMMIT) %s" % self.path)

    def close(self):
        if self.fh:
            r = lib().nfs_close(self.c.ctx, self.fh)
            self.fh = None
            if r < 0:
                self.c.fail(r, "close %s" % self.path)


class NfsClient:
    def __init__(self, server, export, port=2049, version=4, timeout_ms=30000):
        self.timeout_ms = timeout_ms
        self.ctx = lib().nfs_init_context()
        if not self.ctx:
            raise NfsError(0, "nfs_init_context failed")
        lib().nfs_set_timeout(self.ctx, timeout_ms)
        # the URL's options set the version and the port (no portmapper)
        url = "nfs://%s%s?version=%d&nfsport=%d" % (server, export, version, port)
        u = lib().nfs_parse_url_dir(self.ctx, url.encode())
        if not u:
            self.fail(-1, "URL %s" % url)
        try:
            if lib().nfs_mount(self.ctx, u.contents.server, u.contents.path) != 0:
                self.fail(-1, "mount %s" % url)
        finally:
            lib().nfs_destroy_url(u)

    def fail(self, r, what):
        err = lib().nfs_get_error(self.ctx)
        msg = err.decode(errors="replace") if err else "error"
        raise NfsError(-r if r < 0 else 0, "NFS %s: %s" % (what, msg))

    def open(self, path, flags=os.O_RDONLY, mode=0o644):
        fh = ctypes.c_void_p()
        if flags & os.O_CREAT:
            r = lib().nfs_open2(self.ctx, path.encode(), flags, mode, ctypes.byref(fh))
        else:
            r = lib().nfs_open(self.ctx, path.encode(), flags, ctypes.byref(fh))
        if r != 0:
            self.fail(r, "open %s" % path)
        return NfsFile(self, fh, path)

    def write_file(self, path, data, commit=True):
        f = self.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            f.pwrite(data, 0)
            if commit:
                f.fsync()
        finally:
            f.close()

    def read_file(self, path):
        f = self.open(path)
        try:
            return f.pread(self.stat(path)["size"] + 1, 0)
        finally:
            f.close()

    def stat(self, path):
        st = _Stat64()
        r = lib().nfs_stat64(self.ctx, path.encode(), ctypes.byref(st))
        if r != 0:
            self.fail(r, "stat %s" % path)
        return {n: getattr(st, n) for n, _ in _Stat64._fields_}

    def unlink(self, path):
        r = lib().nfs_unlink(self.ctx, path.encode())
        if r != 0:
            self.fail(r, "unlink %s" % path)

    def mkdir(self, path):
        r = lib().nfs_mkdir(self.ctx, path.encode())
        if r != 0:
            self.fail(r, "mkdir %s" % path)

    def rename(self, a, b):
        r = lib().nfs_rename(self.ctx, a.encode(), b.encode())
        if r != 0:
            self.fail(r, "rename %s %s" % (a, b))

    def close(self):
        if self.ctx:
            lib().nfs_destroy_context(self.ctx)
            self.ctx = None


# ------------------------------------------------------------ the server

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ADDR, 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((ADDR, port)) == 0


def _wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def ensure_rpcbind():
    """Ganesha registers its programs with rpcbind; start one if none runs."""
    if port_open(111):
        return
    r = subprocess.run([RPCBIND, "-w"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or not _wait(lambda: port_open(111), 10):
        raise RuntimeError("rpcbind did not start on %s:111 (exit %d): %s"
                           % (ADDR, r.returncode, r.stderr))


def missing():
    """What the NFS tests need and this machine lacks."""
    out = [p for p in (GANESHA, RPCBIND, shutil.which("nfs-ls") or "nfs-ls")
           if not os.path.exists(p)]
    why = available()
    if why:
        out.append(why)
    return out


class Ganesha:
    """One ganesha.nfsd in the foreground exporting `path` at PSEUDO over
    `protocols` ("4", or "3, 4" for libnfs-utils' large NFSv3 WRITEs)."""

    def __init__(self, path, workdir, protocols="4", reap_fds=True):
        self.path = path
        self.workdir = workdir
        self.port = free_port()
        self.proc = None
        self.conf = os.path.join(workdir, "ganesha.conf")
        self.log = os.path.join(workdir, "ganesha.log")
        self.recov = os.path.join(workdir, "ganesha-recovery")
        os.makedirs(self.recov, exist_ok=True)
        with open(EXAMPLE) as f:
            conf = f.read()
        for key, value, count in (("Bind_addr", ADDR, 1), ("NFS_Port", str(self.port), 1),
                                  ("RecoveryRoot", self.recov, 1), ("Path", path, 1),
                                  ("Protocols", protocols, 2)):
            conf, n = re.subn(r"(?m)^(\s*%s\s*=\s*)[^;]*;" % key,
                              lambda m: m.group(1) + value + ";", conf)
            if n != count:
                raise RuntimeError("%s is %d times in %s, not %d" % (key, n, EXAMPLE, count))
        if reap_fds:
            # Close idle file descriptors within seconds (as Ganesha does
            # under descriptor pressure), so that the kernel can evict what
            # Ganesha only holds handles to.
            conf += ("\nMDCACHE {\n\tLRU_Run_Interval = 1;\n\tFD_LWMark_Percent = 0;\n"
                     "\tFD_HWMark_Percent = 1;\n}\n")
        with open(self.conf, "w") as f:
            f.write(conf)

    def url(self, path="", version=4):
        return "nfs://%s%s/%s?version=%d&nfsport=%d" % (ADDR, PSEUDO if version == 4 else
                                                       self.path, path, version, self.port)

    def start(self):
        ensure_rpcbind()
        with open(self.log, "a") as f:
            f.write("---- start\n")
        self.proc = subprocess.Popen(
            [GANESHA, "-F", "-f", self.conf, "-L", self.log, "-N", "NIV_EVENT",
             "-p", os.path.join(self.workdir, "ganesha.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ganesha.nfsd exited with %d at start:\n%s"
                                   % (self.proc.returncode, self.tail()))
            if port_open(self.port) and "NFS SERVER INITIALIZED" in self.tail(100000):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("ganesha.nfsd did not listen on %s:%d within %ds (it may not "
                           "be allowed to bind that address):\n%s"
                           % (ADDR, self.port, START_TIMEOUT, self.tail()))

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def open_files(self):
        """What Ganesha holds open under the export."""
        out = []
        fddir = "/proc/%d/fd" % self.proc.pid
        for fd in os.listdir(fddir):
            try:
                target = os.readlink(os.path.join(fddir, fd))
            except OSError:
                continue
            if target.startswith(self.path + "/"):
                out.append(target[len(self.path) + 1:])
        return sorted(out)

    def tail(self, n=4000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""
