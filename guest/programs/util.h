/* Small helpers shared by the guest programs: checked number parsing,
 * errno names, clocks, atomic files and the file-based handshake that lets a
 * shell on a serial console drive a program through phases. */
#ifndef CXLPROG_UTIL_H
#define CXLPROG_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAGE_SIZE_4K 4096UL
#define HUGE_SIZE_2M (2UL << 20)

/* Internal invariants only; user-facing failures go out as JSON. */
__attribute__((noreturn)) void fatal(const char *msg);
__attribute__((noreturn)) void fatal_oom(void);
void *xcalloc(size_t n, size_t size);

/* "EPERM", "ENOENT", ... or "E<number>" for the rare ones not listed. The
 * returned pointer stays valid until the next call for an unlisted errno. */
const char *errno_name(int err);

/* Strict parsers: the whole string must be consumed, no sign on unsigned
 * values, and the value must fit. Return false on any problem. */
bool parse_u64(const char *s, int base, uint64_t *out);
bool parse_long_range(const char *s, long min, long max, long *out);
/* Comma-separated lists; *out is malloc'ed. */
bool parse_u64_list(const char *s, int base, uint64_t **out, size_t *n);
bool parse_int_list(const char *s, int min, int max, int **out, size_t *n);

uint64_t now_ns(void);
void sleep_ns(uint64_t ns);

int write_file_atomic(const char *path, const char *data, size_t len);

enum wait_result { WAIT_OK, WAIT_TIMEOUT, WAIT_ERROR };
/* Polls until path exists, then removes it so the same name can signal the
 * next phase. timeout_s == 0 waits forever. */
enum wait_result wait_for_file(const char *path, unsigned long timeout_s);
/* Waits for a line (or end of file) on standard input. */
enum wait_result wait_for_stdin(unsigned long timeout_s);

/* xorshift64 (Marsaglia): deterministic for a given seed on every host. */
static inline uint64_t xorshift64(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

int cmp_u64(const void *a, const void *b);

#endif
