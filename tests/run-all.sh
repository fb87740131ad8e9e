#!/bin/bash
# Install what the build and tests need (Debian 12, as root), build pmfuse
# twice -- plainly and with AddressSanitizer + UBSan -- and run the whole
# test suite against both.  Prints "tests: N passed, M failed" last.
set -u
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq libfuse3-dev fuse3 libpmem2-dev libpmemobj-dev pkg-config \
		meson ninja-build gcc python3 python3-lmdb attr acl pmdk-tools \
		systemd strace nfs-ganesha nfs-ganesha-vfs rpcbind libnfs13 libnfs-utils \
		>/dev/null || {
		echo "apt-get install failed"; echo "tests: 0 passed, 1 failed"; exit 1; }
fi

status=0
summaries=()
run_variant() {	# name, meson setup options...
	local dir=$1; shift
	if [ ! -d "$dir" ]; then
		meson setup "$dir" "$@" >/dev/null || { status=1; summaries+=("$dir: setup failed"); return; }
	fi
	meson compile -C "$dir" >/dev/null || { meson compile -C "$dir"; status=1; summaries+=("$dir: build failed"); return; }
	meson test -C "$dir" --print-errorlogs || status=1
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87
run_variant build
run_variant build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

# One summary line for CI, counted from meson's own test logs.
python3 - build build-asan <<'PY'
import json, sys, os
passed = failed = 0
for d in sys.argv[1:]:
    log = os.path.join(d, 'meson-logs', 'testlog.json')
    if not os.path.exists(log):
        failed += 1
        continue
    for line in open(log):
        r = json.loads(line)
        if r.get('result') in ('OK', 'EXPECTEDFAIL', 'SKIP'):
            passed += 1
        else:
            failed += 1
            print(f"FAILED: {d}: {r.get('name')} ({r.get('result')})")
print(f"tests: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
py=$?
[ $status -eq 0 ] && [ $py -eq 0 ]
