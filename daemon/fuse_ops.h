/* fuse_ops: the FUSE low-level operations table over the pmfuse core. */
#ifndef PMFUSE_FUSE_OPS_H
#define PMFUSE_FUSE_OPS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <stdbool.h>

extern const struct fuse_lowlevel_ops pm_ops;
/* Take WRITE data through splice where the system allows (-o nosplice: never). */
extern bool pm_opt_splice;

#endif
