/*
 * notify: systemd's service readiness protocol (sd_notify(3)), without
 * libsystemd: one datagram of "NAME=value" lines to the AF_UNIX socket
 * named by $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace).
 * Nothing is sent without one.  Its four libraries cost the daemon about
 * 2.3 ms at each exec on a host where mapping a library is dear.
 */
#ifndef PMFUSE_NOTIFY_H
#define PMFUSE_NOTIFY_H

/* 0 if sent or no manager asked; -errno otherwise (the caller goes on) */
int service_notify(const char *state);

#endif
