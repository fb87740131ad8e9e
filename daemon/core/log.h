/*
 * log: the daemon's messages, with syslog levels.
 *
 * Lines go to stderr.  When stderr is the journal (systemd sets
 * JOURNAL_STREAM to its device:inode), each line starts with "<N>", the
 * priority prefix journald reads, so levels survive; otherwise lines read
 * "pmfuse: warning: ...".  After daemonizing stderr is gone, so
 * log_use_syslog() switches to syslog(3).  One write per line: lines from
 * concurrent threads never interleave.
 */
#ifndef PMFUSE_LOG_H
#define PMFUSE_LOG_H

#include <stdarg.h>
#include <syslog.h>

/* Only messages at or above (numerically at or below) level are shown. */
void log_set_level(int level);
int log_get_level(void);
/* "err", "warning", "info", "debug" (and "notice", "error", "warn") -> level, -1 if unknown */
int log_parse_level(const char *name);
void log_use_syslog(void);

void pm_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pm_vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_err(...) pm_log(LOG_ERR, __VA_ARGS__)
#define log_warning(...) pm_log(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) pm_log(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) pm_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...) pm_log(LOG_DEBUG, __VA_ARGS__)

#endif
