#!/bin/sh
# The core knows nothing of FUSE; the FUSE layer knows the core only through
# its public header (and the direct-access protocol, include/pmfuse/
# dax-ioctl.h, which it carries for libpmfuse-dax as it carries FUSE's).
# Prints what breaks either rule; exit 1 if anything.
top=${1:-.}
bad=0
if grep -lE '#include [<"](fuse|fuse3/)' "$top"/daemon/core/*.[ch]; then
	echo "the files above include libfuse: the core must not"
	bad=1
fi
for f in "$top"/daemon/*.[ch]; do
	grep -o '#include "[^"]*"' "$f" | while read -r _ h; do
		case $h in
		'"fs.h"'|'"fuse_ops.h"'|'"uring.h"'|'"mountinfo.h"'|'"notify.h"'|'"pmfuse/dax-ioctl.h"') ;;
		*) echo "$f includes $h: the FUSE layer may include only the core's fs.h"; exit 1 ;;
		esac
	done || bad=1
done
exit $bad
