#!/bin/bash
# Long fuzzing run of tests/fuzz/fuzz_image.c with libFuzzer (README.md here).
#
#   bash tests/fuzz/run.sh [executions] [extra libFuzzer options...]
#
# Installs clang if missing (Debian 12: clang-14, whose -fsanitize=fuzzer
# runtime comes with libclang-rt-14-dev), builds build-fuzz/fuzz_image with
# libFuzzer + ASan + UBSan, and runs ONE job (-jobs=1 -workers=1) of N
# executions (default 10^6) over tests/fuzz/corpus and regressions.  New
# inputs go to build-fuzz/corpus-new, crashes to build-fuzz/artifacts, the
# job's log to build-fuzz/fuzz-0.log.
set -eu
cd "$(dirname "$0")/../.."
top=$PWD
runs=${1:-1000000}
shift || true

if ! command -v clang >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev \
			libpmem2-dev libpmemobj-dev pkg-config >/dev/null
	else
		echo "run.sh: clang is missing (apt-get install clang)" >&2
		exit 1
	fi
fi

out=$top/build-fuzz
mkdir -p "$out/corpus-new" "$out/artifacts"
srcs=$(ls daemon/core/*.c)
# shellcheck disable=SC2046,SC2086
clang -g -O1 -fno-omit-frame-pointer -std=gnu11 -Wall -Wextra -Werror \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-D_GNU_SOURCE -DPMFUSE_VERSION_STRING='"fuzz"' \
	-Iinclude -Idaemon/core -Imkfs \
	$srcs $(ls mkfs/fsck/*.c | grep -v main.c) tests/fuzz/fuzz_image.c \
	$(pkg-config --cflags --libs libpmem2 libpmemobj) -lpthread \
	-o "$out/fuzz_image"

# images of earlier runs that crashed (a crash skips the exit handler)
for f in /dev/shm/pmfuse-fuzz-*.img; do
	[ -e "$f" ] || continue
	pid=${f##*-}; pid=${pid%.img}
	kill -0 "$pid" 2>/dev/null || rm -f "$f"
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$out"
start=$(date +%s)
./fuzz_image -jobs=1 -workers=1 -runs="$runs" -timeout=30 -rss_limit_mb=2048 -max_len=600 \
	-print_final_stats=1 -artifact_prefix="$out/artifacts/" "$@" \
	"$out/corpus-new" "$top/tests/fuzz/corpus" "$top/tests/fuzz/regressions" || true
end=$(date +%s)
grep -E '^#[0-9]+[[:space:]]+(DONE|pulse)|stat::|ERROR|runtime error|fuzz_image:' fuzz-0.log | tail -12
echo "run.sh: $((end - start)) s; artifacts: $(ls "$out/artifacts" | wc -l) in $out/artifacts;" \
	"log: $out/fuzz-0.log"
