#define _GNU_SOURCE
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void fatal(const char *msg)
{
	fprintf(stderr, "internal error: %s\n", msg);
	abort();
}

void fatal_oom(void)
{
	fatal("out of memory");
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		fatal_oom();
	return p;
}

const char *errno_name(int err)
{
	static char other[16];

	switch (err) {
	case 0: return "OK";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case ENXIO: return "ENXIO";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case ECHILD: return "ECHILD";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case EXDEV: return "EXDEV";
	case ENODEV: return "ENODEV";
	case ENOTDIR: return "ENOTDIR";
	case EISDIR: return "EISDIR";
	case EINVAL: return "EINVAL";
	case ENFILE: return "ENFILE";
	case EMFILE: return "EMFILE";
	case EFBIG: return "EFBIG";
	case ENOSPC: return "ENOSPC";
	case EROFS: return "EROFS";
	case ERANGE: return "ERANGE";
	case ENOSYS: return "ENOSYS";
	case ENODATA: return "ENODATA";
	case EOVERFLOW: return "EOVERFLOW";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EHWPOISON: return "EHWPOISON";
	default:
		snprintf(other, sizeof(other), "E%d", err);
		return other;
	}
}

bool parse_u64(const char *s, int base, uint64_t *out)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

bool parse_long_range(const char *s, long min, long max, long *out)
{
	char *end;

	if (!s || !*s || *s == ' ')
		return false;
	errno = 0;
	long v = strtol(s, &end, 0);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Splits on commas into a scratch copy; an empty element is an error. */
static char **split(const char *s, size_t *n)
{
	size_t count = 1;

	for (const char *p = s; *p; p++)
		count += *p == ',';
	char *copy = strdup(s);
	char **parts = xcalloc(count + 1, sizeof(*parts));
	if (!copy)
		fatal_oom();
	size_t i = 0;
	char *p = copy;
	for (;;) {
		parts[i++] = p;
		char *c = strchr(p, ',');
		if (!c)
			break;
		*c = '\0';
		p = c + 1;
	}
	*n = i;
	return parts;
}

static void free_split(char **parts)
{
	free(parts[0]);
	free(parts);
}

bool parse_u64_list(const char *s, int base, uint64_t **out, size_t *n)
{
	size_t count;
	char **parts = split(s, &count);
	uint64_t *v = xcalloc(count, sizeof(*v));

	for (size_t i = 0; i < count; i++) {
		if (!parse_u64(parts[i], base, &v[i])) {
			free(v);
			free_split(parts);
			return false;
		}
	}
	free_split(parts);
	*out = v;
	*n = count;
	return true;
}

bool parse_int_list(const char *s, int min, int max, int **out, size_t *n)
{
	size_t count;
	char **parts = split(s, &count);
	int *v = xcalloc(count, sizeof(*v));

	for (size_t i = 0; i < count; i++) {
		long l;

		if (!parse_long_range(parts[i], min, max, &l)) {
			free(v);
			free_split(parts);
			return false;
		}
		v[i] = (int)l;
	}
	free_split(parts);
	*out = v;
	*n = count;
	return true;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

int write_file_atomic(const char *path, const char *data, size_t len)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, data + done, len - done);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			int err = errno;
			close(fd);
			unlink(tmp);
			return -err;
		}
		done += (size_t)w;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		int err = errno;
		unlink(tmp);
		return -err;
	}
	return 0;
}

/* 20 ms keeps the reaction quick without making a TCG guest busy. */
#define POLL_NS 20000000ULL

enum wait_result wait_for_file(const char *path, unsigned long timeout_s)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000ULL;

	for (;;) {
		if (access(path, F_OK) == 0) {
			if (unlink(path) < 0 && errno != ENOENT)
				return WAIT_ERROR;
			return WAIT_OK;
		}
		if (errno != ENOENT)
			return WAIT_ERROR;
		if (timeout_s && now_ns() >= deadline)
			return WAIT_TIMEOUT;
		sleep_ns(POLL_NS);
	}
}

enum wait_result wait_for_stdin(unsigned long timeout_s)
{
	struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
	uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000ULL;

	for (;;) {
		int ms = -1;

		if (timeout_s) {
			uint64_t now = now_ns();
			if (now >= deadline)
				return WAIT_TIMEOUT;
			ms = (int)((deadline - now) / 1000000ULL) + 1;
		}
		int r = poll(&pfd, 1, ms);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return WAIT_ERROR;
		}
		if (r == 0)
			continue;
		/* A whole line or end of file releases the wait. */
		char c;
		ssize_t n = read(STDIN_FILENO, &c, 1);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return WAIT_ERROR;
		}
		if (n == 0 || c == '\n')
			return WAIT_OK;
	}
}

int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}
