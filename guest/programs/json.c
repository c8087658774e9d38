#define _GNU_SOURCE
#include "json.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void json_init(struct json *j)
{
	memset(j, 0, sizeof(*j));
}

void json_free(struct json *j)
{
	free(j->buf);
	memset(j, 0, sizeof(*j));
}

void json_reset(struct json *j)
{
	j->len = 0;
	j->depth = 0;
	memset(j->has_member, 0, sizeof(j->has_member));
}

static void put(struct json *j, const char *s, size_t n)
{
	if (j->len + n + 1 > j->cap) {
		size_t cap = j->cap ? j->cap : 4096;

		while (j->len + n + 1 > cap)
			cap *= 2;
		char *nb = realloc(j->buf, cap);
		if (!nb)
			fatal_oom();
		j->buf = nb;
		j->cap = cap;
	}
	memcpy(j->buf + j->len, s, n);
	j->len += n;
	j->buf[j->len] = '\0';
}

static void puts_(struct json *j, const char *s)
{
	put(j, s, strlen(s));
}

static void putf(struct json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct json *j, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	put(j, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void put_string(struct json *j, const char *s)
{
	put(j, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			puts_(j, "\\\"");
			break;
		case '\\':
			puts_(j, "\\\\");
			break;
		case '\n':
			puts_(j, "\\n");
			break;
		case '\t':
			puts_(j, "\\t");
			break;
		case '\r':
			puts_(j, "\\r");
			break;
		default:
			if (*p < 0x20)
				putf(j, "\\u%04x", *p);
			else
				put(j, (const char *)p, 1);
		}
	}
	put(j, "\"", 1);
}

static void member(struct json *j, const char *key)
{
	if (j->depth > 0) {
		if (j->has_member[j->depth])
			put(j, ",", 1);
		j->has_member[j->depth] = true;
	}
	if (key) {
		put_string(j, key);
		put(j, ":", 1);
	}
}

static void open_(struct json *j, const char *key, const char *bracket)
{
	member(j, key);
	puts_(j, bracket);
	if (j->depth + 1 >= JSON_MAX_DEPTH)
		fatal("JSON nested too deeply");
	j->depth++;
	j->has_member[j->depth] = false;
}

static void close_(struct json *j, const char *bracket)
{
	if (j->depth <= 0)
		fatal("JSON close without open");
	j->depth--;
	puts_(j, bracket);
}

void json_obj_begin(struct json *j, const char *key)
{
	open_(j, key, "{");
}

void json_obj_end(struct json *j)
{
	close_(j, "}");
}

void json_arr_begin(struct json *j, const char *key)
{
	open_(j, key, "[");
}

void json_arr_end(struct json *j)
{
	close_(j, "]");
}

void json_str(struct json *j, const char *key, const char *val)
{
	member(j, key);
	if (val)
		put_string(j, val);
	else
		puts_(j, "null");
}

void json_int(struct json *j, const char *key, long long val)
{
	member(j, key);
	putf(j, "%lld", val);
}

void json_uint(struct json *j, const char *key, unsigned long long val)
{
	member(j, key);
	putf(j, "%llu", val);
}

void json_hex(struct json *j, const char *key, uint64_t val)
{
	member(j, key);
	putf(j, "\"0x%llx\"", (unsigned long long)val);
}

void json_bool(struct json *j, const char *key, bool val)
{
	member(j, key);
	puts_(j, val ? "true" : "false");
}

void json_null(struct json *j, const char *key)
{
	member(j, key);
	puts_(j, "null");
}

void json_double(struct json *j, const char *key, double val)
{
	member(j, key);
	putf(j, "%.3f", val);
}

int json_emit(const struct json *j, const char *path)
{
	if (j->depth != 0)
		fatal("JSON emitted with open containers");
	/* The file first: whoever reacts to the line on stdout may read it at
	 * once. */
	if (path) {
		char *nl = malloc(j->len + 2);
		if (!nl)
			fatal_oom();
		memcpy(nl, j->buf, j->len);
		nl[j->len] = '\n';
		int rc = write_file_atomic(path, nl, j->len + 1);
		free(nl);
		if (rc)
			return rc;
	}
	if (fwrite(j->buf, 1, j->len, stdout) != j->len || fputc('\n', stdout) == EOF ||
	    fflush(stdout) == EOF)
		return -EIO;
	return 0;
}

void json_prog_head(struct json *j, const struct json_prog *p, bool ok)
{
	json_bool(j, "ok", ok);
	json_str(j, "prog", p->prog);
	json_str(j, p->kind_key, p->kind);
}

void json_prog_fail(const struct json_prog *p, int status, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	struct json j;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_init(&j);
	json_obj_begin(&j, NULL);
	json_prog_head(&j, p, false);
	json_str(&j, "error", msg);
	json_str(&j, "errno", err ? errno_name(err) : NULL);
	if (status == 2)
		json_bool(&j, "usage_error", true);
	json_obj_end(&j);
	json_emit(&j, p->out);
	if (status == 2)
		fprintf(stderr, "%s: %s\n\n%s", p->prog, msg, p->usage);
	exit(status);
}
