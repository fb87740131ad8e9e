/* fuse_ops: the FUSE low-level operations table over the pmfuse core. */
#ifndef PMFUSE_FUSE_OPS_H
#define PMFUSE_FUSE_OPS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <stdbool.h>

extern const struct fuse_lowlevel_ops pm_ops;
/* Take WRITE data through splice where the system allows (-o nosplice: never). */
extern bool pm_opt_splice;
/* Open O_DIRECT files FOPEN_DIRECT_IO (-o nodirect_io, or single-threaded: never). */
extern bool pm_opt_direct_io;
/* The session, for the notifications some handlers send. */
void pm_ops_set_session(struct fuse_session *se);

#endif
