/*
 * log: leveled messages to stderr, the journal or syslog (see log.h).
 */

#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static atomic_int max_level = LOG_INFO;
static atomic_int sink;		/* 0 undecided, 1 plain stderr, 2 journal, 3 syslog */

static const char *const names[] = {
	[LOG_EMERG] = "emergency", [LOG_ALERT] = "alert", [LOG_CRIT] = "critical",
	[LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

#ifdef PMFUSE_SEEDED_BUGS
static const char *seeded_which;

static void seeded_read(void)
{
	seeded_which = getenv("PMFUSE_SEEDED_BUG");
}

bool seeded_bug(const char *name)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, seeded_read);
	return seeded_which && strcmp(seeded_which, name) == 0;
}
#endif

void log_set_level(int level)
{
	atomic_store(&max_level, level);
}

int log_get_level(void)
{
	return atomic_load(&max_level);
}

int log_parse_level(const char *s)
{
	static const struct { const char *name; int level; } tab[] = {
		{ "err", LOG_ERR }, { "error", LOG_ERR }, { "warning", LOG_WARNING },
		{ "warn", LOG_WARNING }, { "notice", LOG_NOTICE }, { "info", LOG_INFO },
		{ "debug", LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strcmp(s, tab[i].name) == 0)
			return tab[i].level;
	return -1;
}

/* Is stderr the stream systemd connected to the journal? */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st))
		return false;
	return st.st_dev == dev && st.st_ino == ino;
}

void log_use_syslog(void)
{
	openlog("pmfuse", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	atomic_store(&sink, 3);
}

void pm_vlog(int level, const char *fmt, va_list ap)
{
	char line[1024];
	int n, s;

	if (level > atomic_load(&max_level))
		return;
	s = atomic_load(&sink);
	if (!s) {
		s = stderr_is_journal() ? 2 : 1;
		atomic_store(&sink, s);
	}
	if (s == 3) {
		vsyslog(level, fmt, ap);
		return;
	}
	if (s == 2)
		n = snprintf(line, sizeof(line), "<%d>", level);
	else if (level <= LOG_WARNING)
		n = snprintf(line, sizeof(line), "pmfuse: %s: ", names[level]);
	else
		n = snprintf(line, sizeof(line), "pmfuse: ");
	n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	/* messages from libraries come with their own newline */
	if (n == 0 || line[n - 1] != '\n')
		line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to say it */
	}
}

void pm_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pm_vlog(level, fmt, ap);
	va_end(ap);
}
