/* A tiny JSON writer: builds one compact object in memory so it can be
 * printed as one line on a serial console and also written to a file. */
#ifndef CXLPROG_JSON_H
#define CXLPROG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 32

struct json {
	char *buf;
	size_t len;
	size_t cap;
	int depth;
	/* Whether the container at each depth already holds a member, so the
	 * next one needs a comma. */
	bool has_member[JSON_MAX_DEPTH];
};

void json_init(struct json *j);
void json_free(struct json *j);
void json_reset(struct json *j);

/* A NULL key means "inside an array" (or the top-level value). */
void json_obj_begin(struct json *j, const char *key);
void json_obj_end(struct json *j);
void json_arr_begin(struct json *j, const char *key);
void json_arr_end(struct json *j);

void json_str(struct json *j, const char *key, const char *val); /* NULL -> null */
void json_int(struct json *j, const char *key, long long val);
void json_uint(struct json *j, const char *key, unsigned long long val);
void json_hex(struct json *j, const char *key, uint64_t val); /* "0x..." */
void json_bool(struct json *j, const char *key, bool val);
void json_null(struct json *j, const char *key);
void json_double(struct json *j, const char *key, double val);

/* Writes the finished object to path when it is not NULL (atomically, via a
 * temporary file and rename, so a reader polling for path never sees half an
 * object), then prints it as one line on stdout; the file comes first so it
 * exists by the time the line is seen. Returns 0 or -errno. */
int json_emit(const struct json *j, const char *path);

/* Who is reporting: the head every report of a program starts with. */
struct json_prog {
	const char *prog;     /* "mpp" */
	const char *kind_key; /* "cmd" or "mode" */
	const char *kind;     /* the subcommand or mode */
	const char *out;      /* --out FILE, or NULL */
	const char *usage;    /* printed on stderr after a usage error */
};

void json_prog_head(struct json *j, const struct json_prog *p, bool ok);
/* Report a failure as the program's JSON (stdout and --out), print the usage
 * after a usage error (status 2), and exit with status. */
__attribute__((noreturn, format(printf, 4, 5))) void
json_prog_fail(const struct json_prog *p, int status, int err, const char *fmt, ...);

#endif
