/* fuse_ops: the FUSE low-level operations table over the pmfuse core. */
#ifndef PMFUSE_FUSE_OPS_H
#define PMFUSE_FUSE_OPS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern const struct fuse_lowlevel_ops pm_ops;
/* Take WRITE data through splice where the system allows (-o nosplice: never). */
extern bool pm_opt_splice;
/* Enforce POSIX ACLs (FUSE_POSIX_ACL; -o noacl: keep them opaque). */
extern bool pm_opt_acl;
/* Ask for the kernel's writeback cache (-o writeback_cache; never with -o sync). */
extern bool pm_opt_writeback_cache;
/* Open O_DIRECT files FOPEN_DIRECT_IO (-o nodirect_io, or single-threaded: never). */
extern bool pm_opt_direct_io;
extern bool pm_opt_all_direct;	/* -o direct_io: every open FOPEN_DIRECT_IO */
/*
 * INIT flags libfuse 3.14 cannot name: given what the kernel offered and
 * the reply libfuse built (flags2 in the high word), the reply to send.
 * Called by the session's custom io (uring.c) before the reply goes out.
 */
uint64_t pm_ops_init_reply(uint64_t offered, uint64_t reply);
/*
 * Requests libfuse 3.14 cannot name, rewritten in place before it
 * dispatches them (msg: fuse_in_header and arguments, len bytes): TMPFILE
 * becomes a CREATE of the name "/", which pm_create serves as O_TMPFILE.
 * The session's custom io calls it on every request it sees whole.
 */
void pm_ops_translate(void *msg, size_t len);
/* The req_* lines of the stats xattr; returns the bytes written to buf. */
int pm_ops_stats_lines(char *buf, size_t size);
/* The session, for the notifications some handlers send. */
void pm_ops_set_session(struct fuse_session *se);

#endif
