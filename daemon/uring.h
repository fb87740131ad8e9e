/*
 * FUSE over io_uring: the kernel hands each request to a ring queue of the
 * CPU it was issued on (Linux >= 6.14, module parameter fuse.enable_uring).
 * Two workers per CPU, pinned there, serve that queue, so a request and its
 * reply never cross CPUs and no idle CPU has to be woken for either.
 *
 * Requests go through libfuse's own dispatcher (fuse_session_process_buf),
 * and replies come back through a custom-io writev that this file installs
 * on the session; FORGETs, INTERRUPTs and notifications stay on /dev/fuse.
 */
#ifndef PMFUSE_URING_H
#define PMFUSE_URING_H

#include "fuse_ops.h"
#include <stdbool.h>
#include <stdint.h>

struct fs;

/*
 * Install the custom io on a mounted session.  With want != 0 and a kernel
 * that offers FUSE_OVER_IO_URING in INIT, the workers set up their rings, the
 * INIT reply asks for io_uring only if all of them could, and they register
 * once it is answered; with yield != 0 they commit
 * replies as SCHED_IDLE where they can (see commit_fetch()).  Also adds the
 * uring_* lines to the stats xattr.  Returns 0 or -errno.
 */
int uring_attach(struct fuse_session *se, struct fs *fs, const char *mountpoint, int want,
		 int yield);

/* After the unmount: stop and join the workers, release the rings. */
void uring_detach(void);

/* Is this thread an io_uring worker serving a request (its reply is copied by put_payload)? */
bool uring_serving(void);

#endif
