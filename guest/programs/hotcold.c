/* hotcold: a workload whose memory accesses are known exactly, so a TCG
 * plugin's per-page counts can be checked against it. Two sets of pages (hot
 * and cold), each bound to a node, are accessed in a chosen pattern; every
 * access to a set is one counted 8-byte volatile load or store. The chase
 * mode walks a random cycle of cache lines on one node to show latency. */
#define _GNU_SOURCE
#include "json.h"
#include "mem.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static const char usage_text[] =
	"usage: hotcold [run] [OPTIONS]\n"
	"       hotcold chase [--lines N] [--node N] [--accesses A] [--seed S] [PAUSE]\n"
	"\n"
	"run options:\n"
	"  --hot-pages H        pages in the hot set (default 32 = 128 KiB)\n"
	"  --cold-pages C       pages in the cold set (default 96 = 384 KiB)\n"
	"  --hot-node N         MPOL_BIND the hot set to node N before first touch\n"
	"  --cold-node N        same for the cold set (default: no binding)\n"
	"  --pattern seq|stride|random   (default seq)\n"
	"  --step B             bytes between access slots, multiple of 8 dividing\n"
	"                       4096 (default 64: one slot per cache line)\n"
	"  --stride B           stride pattern: bytes between consecutive accesses,\n"
	"                       a multiple of --step (default 4096)\n"
	"  --seed S             xorshift64 seed for random (default 1)\n"
	"  --iterations I       iterations per phase (default 4)\n"
	"  --seconds T          instead: iterate for T seconds per phase\n"
	"  --ratio K            hot passes per iteration (cold: 1; default 8)\n"
	"  --mix R:W            reads:writes (default 3:1; 1:0 read only)\n"
	"  --phases P           access phases, paused between (default 1, max 16)\n"
	"  --print-pas          print a pages report before the first phase\n"
	"  --unbind             after placing the sets, drop their MPOL_BIND (the\n"
	"                       pages stay) so the kernel's own policies may move them\n"
	"  --cold-ms MS         the cold pass only when MS milliseconds have passed\n"
	"                       since the last one (default 0: every iteration)\n"
	"  --swap-at P          from phase P on the sets swap roles: the cold set\n"
	"                       gets the K passes, the hot set the one\n"
	"chase options:\n"
	"  --lines N            cache lines in the cycle (default 1024 = 64 KiB)\n"
	"  --node N             MPOL_BIND the lines to node N\n"
	"  --accesses A         dependent loads to time (default 100000)\n"
	"PAUSE (both modes):\n"
	"  --pause-file F       before the first phase, between phases and after\n"
	"                       the last: print a pause report, wait for F, remove it\n"
	"  --ready-file F       also write each pause report to F (atomically)\n"
	"  --timeout S          give up waiting after S seconds (default 600)\n"
	"  --out F              also write the final report to F (atomically)\n"
	"\n"
	"Each pass over a set makes exactly one access per slot (slots = bytes /\n"
	"step); an iteration is K hot passes then 1 cold pass; so per phase\n"
	"hot accesses = iterations * K * hot_slots, cold = iterations * cold_slots,\n"
	"and stores = floor(accesses * W / (R + W)) per set over the whole run.\n";

enum pattern { P_SEQ, P_STRIDE, P_RANDOM };
static const char *const pattern_names[] = { "seq", "stride", "random" };

enum opt_id {
	OPT_HOT_PAGES = 1,
	OPT_COLD_PAGES,
	OPT_HOT_NODE,
	OPT_COLD_NODE,
	OPT_PATTERN,
	OPT_STEP,
	OPT_STRIDE,
	OPT_SEED,
	OPT_ITERATIONS,
	OPT_SECONDS,
	OPT_RATIO,
	OPT_MIX,
	OPT_PHASES,
	OPT_PRINT_PAS,
	OPT_UNBIND,
	OPT_COLD_MS,
	OPT_SWAP_AT,
	OPT_LINES,
	OPT_NODE,
	OPT_ACCESSES,
	OPT_PAUSE_FILE,
	OPT_READY_FILE,
	OPT_TIMEOUT,
	OPT_OUT,
	OPT_HELP,
};

#define BIT(o) (1ULL << (o))
#define COMMON_OPTS \
	(BIT(OPT_SEED) | BIT(OPT_PAUSE_FILE) | BIT(OPT_READY_FILE) | BIT(OPT_TIMEOUT) | BIT(OPT_OUT) | BIT(OPT_HELP))
#define RUN_OPTS                                                                                  \
	(COMMON_OPTS | BIT(OPT_HOT_PAGES) | BIT(OPT_COLD_PAGES) | BIT(OPT_HOT_NODE) | BIT(OPT_COLD_NODE) |   \
	 BIT(OPT_PATTERN) | BIT(OPT_STEP) | BIT(OPT_STRIDE) | BIT(OPT_ITERATIONS) | BIT(OPT_SECONDS) |         \
	 BIT(OPT_RATIO) | BIT(OPT_MIX) | BIT(OPT_PHASES) | BIT(OPT_PRINT_PAS) | BIT(OPT_UNBIND) |   \
	 BIT(OPT_COLD_MS) | BIT(OPT_SWAP_AT))
#define CHASE_OPTS (COMMON_OPTS | BIT(OPT_LINES) | BIT(OPT_NODE) | BIT(OPT_ACCESSES))

static const struct option long_opts[] = {
	{ "hot-pages", required_argument, NULL, OPT_HOT_PAGES },
	{ "cold-pages", required_argument, NULL, OPT_COLD_PAGES },
	{ "hot-node", required_argument, NULL, OPT_HOT_NODE },
	{ "cold-node", required_argument, NULL, OPT_COLD_NODE },
	{ "pattern", required_argument, NULL, OPT_PATTERN },
	{ "step", required_argument, NULL, OPT_STEP },
	{ "stride", required_argument, NULL, OPT_STRIDE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "iterations", required_argument, NULL, OPT_ITERATIONS },
	{ "seconds", required_argument, NULL, OPT_SECONDS },
	{ "ratio", required_argument, NULL, OPT_RATIO },
	{ "mix", required_argument, NULL, OPT_MIX },
	{ "phases", required_argument, NULL, OPT_PHASES },
	{ "print-pas", no_argument, NULL, OPT_PRINT_PAS },
	{ "unbind", no_argument, NULL, OPT_UNBIND },
	{ "cold-ms", required_argument, NULL, OPT_COLD_MS },
	{ "swap-at", required_argument, NULL, OPT_SWAP_AT },
	{ "lines", required_argument, NULL, OPT_LINES },
	{ "node", required_argument, NULL, OPT_NODE },
	{ "accesses", required_argument, NULL, OPT_ACCESSES },
	{ "pause-file", required_argument, NULL, OPT_PAUSE_FILE },
	{ "ready-file", required_argument, NULL, OPT_READY_FILE },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "out", required_argument, NULL, OPT_OUT },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

#define MAX_PHASES 32
#define MAX_NODE 1023
#define LINE 64

static struct {
	const char *mode;
	unsigned long long seen;
	long hot_pages, cold_pages;
	int hot_node, cold_node;
	enum pattern pattern;
	long step, stride;
	uint64_t seed;
	long iterations;
	long seconds;
	long ratio;
	long reads, writes;
	long phases;
	long cold_ms;
	long swap_at;
	long lines;
	int node;
	long accesses;
	const char *pause_file, *ready_file, *out;
	long timeout_s;
} cfg = {
	.hot_pages = 32,
	.cold_pages = 96,
	.hot_node = -1,
	.cold_node = -1,
	.pattern = P_SEQ,
	.step = 64,
	.stride = 4096,
	.seed = 1,
	.iterations = 4,
	.ratio = 8,
	.reads = 3,
	.writes = 1,
	.phases = 1,
	.lines = 1024,
	.node = -1,
	.accesses = 100000,
	.timeout_s = 600,
};

/* Keeps loaded values alive so no load can be dropped; printed at the end. */
static uint64_t sink;

/* Filled at each call: the subcommand and --out are known only after parsing. */
static const struct json_prog *whoami(void)
{
	static struct json_prog p;

	p = (struct json_prog){ "hotcold", "mode", cfg.mode, cfg.out, usage_text };
	return &p;
}

static void head(struct json *j, bool ok)
{
	json_prog_head(j, whoami(), ok);
}

#define fail(err, ...) json_prog_fail(whoami(), 1, (err), __VA_ARGS__)
#define usage(...) json_prog_fail(whoami(), 2, 0, __VA_ARGS__)

static long num(const char *name, const char *s, long min, long max)
{
	long v;

	if (!parse_long_range(s, min, max, &v))
		usage("%s wants a number %ld..%ld, got '%s'", name, min, max, s);
	return v;
}

static const char *opt_name(int id)
{
	for (const struct option *p = long_opts; p->name; p++)
		if (p->val == id)
			return p->name;
	return "?";
}

static void parse_args(int argc, char **argv)
{
	int first = 1;

	cfg.mode = "run";
	if (argc > 1 && (strcmp(argv[1], "run") == 0 || strcmp(argv[1], "chase") == 0)) {
		cfg.mode = argv[1];
		first = 2;
	} else if (argc > 1 && argv[1][0] != '-') {
		usage("unknown mode '%s' (run or chase)", argv[1]);
	}
	unsigned long long allowed = strcmp(cfg.mode, "run") == 0 ? RUN_OPTS : CHASE_OPTS;
	opterr = 0;
	optind = first;
	int c;
	while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		if (c == '?')
			usage("unknown option '%s'", argv[optind - 1]);
		if (c == ':')
			usage("option '%s' needs a value", argv[optind - 1]);
		if (c == 'h')
			c = OPT_HELP;
		if (!(allowed & BIT(c)))
			usage("--%s is not an option of 'hotcold %s'", opt_name(c), cfg.mode);
		if (cfg.seen & BIT(c))
			usage("--%s given twice", opt_name(c));
		cfg.seen |= BIT(c);
		switch (c) {
		case OPT_HELP:
			fputs(usage_text, stdout);
			exit(0);
		case OPT_HOT_PAGES:
			cfg.hot_pages = num("--hot-pages", optarg, 1, 1L << 20);
			break;
		case OPT_COLD_PAGES:
			cfg.cold_pages = num("--cold-pages", optarg, 1, 1L << 20);
			break;
		case OPT_HOT_NODE:
			cfg.hot_node = (int)num("--hot-node", optarg, 0, MAX_NODE);
			break;
		case OPT_COLD_NODE:
			cfg.cold_node = (int)num("--cold-node", optarg, 0, MAX_NODE);
			break;
		case OPT_PATTERN: {
			size_t k;
			for (k = 0; k < 3; k++)
				if (strcmp(optarg, pattern_names[k]) == 0)
					break;
			if (k == 3)
				usage("--pattern wants seq, stride or random, got '%s'", optarg);
			cfg.pattern = (enum pattern)k;
			break;
		}
		case OPT_STEP:
			cfg.step = num("--step", optarg, 8, 4096);
			break;
		case OPT_STRIDE:
			cfg.stride = num("--stride", optarg, 8, 1L << 30);
			break;
		case OPT_SEED:
			if (!parse_u64(optarg, 0, &cfg.seed))
				usage("--seed wants an unsigned number, got '%s'", optarg);
			break;
		case OPT_ITERATIONS:
			cfg.iterations = num("--iterations", optarg, 1, 1L << 40);
			break;
		case OPT_SECONDS:
			cfg.seconds = num("--seconds", optarg, 1, 1L << 20);
			break;
		case OPT_RATIO:
			cfg.ratio = num("--ratio", optarg, 1, 1L << 20);
			break;
		case OPT_MIX: {
			char r[32], w[32];
			const char *colon = strchr(optarg, ':');
			size_t rl = colon ? (size_t)(colon - optarg) : 0;
			if (!colon || rl == 0 || rl >= sizeof(r) || strlen(colon + 1) >= sizeof(w))
				usage("--mix wants READS:WRITES, got '%s'", optarg);
			memcpy(r, optarg, rl);
			r[rl] = '\0';
			strcpy(w, colon + 1);
			cfg.reads = num("--mix reads", r, 0, 1000000);
			cfg.writes = num("--mix writes", w, 0, 1000000);
			if (cfg.reads + cfg.writes == 0)
				usage("--mix 0:0 makes no accesses");
			break;
		}
		case OPT_PHASES:
			cfg.phases = num("--phases", optarg, 1, MAX_PHASES);
			break;
		case OPT_PRINT_PAS:
		case OPT_UNBIND:
			break;
		case OPT_COLD_MS:
			cfg.cold_ms = num("--cold-ms", optarg, 0, 1L << 30);
			break;
		case OPT_SWAP_AT:
			cfg.swap_at = num("--swap-at", optarg, 2, MAX_PHASES);
			break;
		case OPT_LINES:
			cfg.lines = num("--lines", optarg, 2, 1L << 24);
			break;
		case OPT_NODE:
			cfg.node = (int)num("--node", optarg, 0, MAX_NODE);
			break;
		case OPT_ACCESSES:
			cfg.accesses = num("--accesses", optarg, 1, 1L << 40);
			break;
		case OPT_PAUSE_FILE:
			cfg.pause_file = optarg;
			break;
		case OPT_READY_FILE:
			cfg.ready_file = optarg;
			break;
		case OPT_TIMEOUT:
			cfg.timeout_s = num("--timeout", optarg, 0, 1L << 30);
			break;
		case OPT_OUT:
			cfg.out = optarg;
			break;
		}
	}
	if (optind < argc)
		usage("unexpected argument '%s'", argv[optind]);
	if (cfg.step % 8 || PAGE_SIZE_4K % (unsigned long)cfg.step)
		usage("--step must be a multiple of 8 that divides 4096, got %ld", cfg.step);
	if (cfg.stride % cfg.step)
		usage("--stride (%ld) must be a multiple of --step (%ld)", cfg.stride, cfg.step);
	if (cfg.swap_at > cfg.phases)
		usage("--swap-at %ld is after the last phase (%ld)", cfg.swap_at, cfg.phases);
	if ((cfg.seen & BIT(OPT_STRIDE)) && cfg.pattern != P_STRIDE)
		usage("--stride only applies to --pattern stride");
	if ((cfg.seen & BIT(OPT_SEED)) && cfg.pattern != P_RANDOM && strcmp(cfg.mode, "chase") != 0)
		usage("--seed only applies to --pattern random and chase");
	if ((cfg.seen & BIT(OPT_SECONDS)) && (cfg.seen & BIT(OPT_ITERATIONS)))
		usage("--seconds cannot be combined with --iterations");
	if (cfg.ready_file && !cfg.pause_file)
		usage("--ready-file needs --pause-file");
	if (cfg.seed == 0)
		usage("--seed 0 would make xorshift64 return 0 forever");
}

/* ---- sets ------------------------------------------------------------------ */

struct set {
	const char *name;
	int node;
	size_t pages;
	char *base;
	size_t bytes;
	size_t slots;
	uint64_t mix_acc; /* carries over passes so the R:W split stays exact */
	uint64_t loads[MAX_PHASES], stores[MAX_PHASES], ns[MAX_PHASES], passes[MAX_PHASES];
	struct page_view *placed; /* as verified after the first touch */
	size_t misplaced;
};

static uint64_t init_stores;

static char *map_pages(size_t pages, int node)
{
	size_t bytes = pages * PAGE_SIZE_4K;
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		fail(errno, "mmap of %zu bytes failed: %s", bytes, strerror(errno));
	/* 4 KiB pages only: each page is then placed, verified and moved on
	 * its own. */
	madvise(p, bytes, MADV_NOHUGEPAGE);
	if (node >= 0) {
		int err = -bind_to_node(p, bytes, node);
		if (err)
			fail(err, "mbind(MPOL_BIND, node %d) failed: %s", node, strerror(err));
	}
	for (size_t off = 0; off < bytes; off += PAGE_SIZE_4K) {
		*(volatile uint64_t *)(p + off) = off;
		init_stores++;
	}
	return p;
}

static struct page_view *view_range(char *base, size_t pages, int pm_fd)
{
	uint64_t *vas = xcalloc(pages, sizeof(*vas));
	struct page_view *v = xcalloc(pages, sizeof(*v));

	for (size_t i = 0; i < pages; i++)
		vas[i] = (uintptr_t)base + i * PAGE_SIZE_4K;
	view_pages(0, pm_fd, vas, pages, v);
	free(vas);
	return v;
}

static void set_init(struct set *s, const char *name, long pages, int node, int pm_fd)
{
	memset(s, 0, sizeof(*s));
	s->name = name;
	s->node = node;
	s->pages = (size_t)pages;
	s->bytes = s->pages * PAGE_SIZE_4K;
	s->slots = s->bytes / (size_t)cfg.step;
	s->base = map_pages(s->pages, node);
	s->placed = view_range(s->base, s->pages, pm_fd);
	if (node >= 0)
		for (size_t i = 0; i < s->pages; i++)
			s->misplaced += s->placed[i].node != node;
}

static void json_pages_of(struct json *j, char *base, size_t pages, int pm_fd)
{
	struct page_view *v = view_range(base, pages, pm_fd);

	json_node_counts(j, v, pages);
	json_arr_begin(j, "pages");
	for (size_t i = 0; i < pages; i++)
		json_page_view(j, &v[i], (long)i);
	json_arr_end(j);
	free(v);
}

static void json_placement(struct json *j, const struct set *s)
{
	if (s->node >= 0)
		json_int(j, "node_requested", s->node);
	else
		json_null(j, "node_requested");
	json_bool(j, "placement_ok", s->misplaced == 0);
	json_uint(j, "misplaced_count", s->misplaced);
	json_arr_begin(j, "misplaced");
	for (size_t i = 0; s->node >= 0 && i < s->pages; i++) {
		const struct page_view *v = &s->placed[i];
		if (v->node == s->node)
			continue;
		json_obj_begin(j, NULL);
		json_uint(j, "i", i);
		json_hex(j, "va", v->va);
		if (v->node >= 0)
			json_int(j, "node", v->node);
		else
			json_str(j, "node", errno_name(-v->node));
		json_obj_end(j);
	}
	json_arr_end(j);
}

/* ---- the access loop ------------------------------------------------------- */

/* One counted access: a store when the Bresenham-style accumulator wraps,
 * else a load. Exactly one volatile 8-byte access either way. */
#define ACCESS(addr)                                                         \
	do {                                                                 \
		volatile uint64_t *p_ = (volatile uint64_t *)(addr);         \
		acc += writes;                                               \
		if (acc >= period) {                                         \
			acc -= period;                                       \
			*p_ = stores;                                        \
			stores++;                                            \
		} else {                                                     \
			local += *p_;                                        \
			loads++;                                             \
		}                                                            \
	} while (0)

static void run_pass(struct set *s, int phase, uint64_t *rng)
{
	const uint64_t writes = (uint64_t)cfg.writes, period = (uint64_t)(cfg.reads + cfg.writes);
	const size_t n = s->slots, step = (size_t)cfg.step;
	char *const base = s->base;
	uint64_t acc = s->mix_acc, loads = 0, stores = 0, local = 0;
	uint64_t t0 = now_ns();

	switch (cfg.pattern) {
	case P_SEQ:
		for (size_t k = 0; k < n; k++)
			ACCESS(base + k * step);
		break;
	case P_STRIDE: {
		/* Column-major walk: consecutive accesses are --stride apart,
		 * yet every slot is visited exactly once per pass. */
		const size_t hop = (size_t)cfg.stride / step;
		for (size_t start = 0; start < hop && start < n; start++)
			for (size_t k = start; k < n; k += hop)
				ACCESS(base + k * step);
		break;
	}
	case P_RANDOM:
		for (size_t k = 0; k < n; k++)
			ACCESS(base + (xorshift64(rng) % n) * step);
		break;
	}
	s->ns[phase] += now_ns() - t0;
	s->mix_acc = acc;
	s->loads[phase] += loads;
	s->stores[phase] += stores;
	s->passes[phase]++;
	sink += local;
}

/* When the cold set last had its pass (0: never), across phases. */
static uint64_t last_cold;

static uint64_t run_phase(struct set *hot, struct set *cold, int phase, uint64_t *rng)
{
	uint64_t t0 = now_ns(), done = 0;
	uint64_t limit = (uint64_t)cfg.seconds * 1000000000ULL;
	const uint64_t cold_ns = (uint64_t)cfg.cold_ms * 1000000ULL;

	for (;;) {
		for (long k = 0; k < cfg.ratio; k++)
			run_pass(hot, phase, rng);
		/* By the clock, not by iterations: an iteration gets ten times
		 * faster once the hot set is on DRAM. */
		if (!cfg.cold_ms || !last_cold || now_ns() - last_cold >= cold_ns) {
			run_pass(cold, phase, rng);
			last_cold = now_ns();
		}
		done++;
		if (cfg.seconds ? now_ns() - t0 >= limit : done >= (uint64_t)cfg.iterations)
			break;
	}
	return done;
}

/* ---- pauses ---------------------------------------------------------------- */

struct pause_ctx {
	struct set *sets;
	size_t nsets;
	int pm_fd;
	int index;
};

static void json_sets_pages(struct json *j, const struct pause_ctx *pc)
{
	json_obj_begin(j, "sets");
	for (size_t i = 0; i < pc->nsets; i++) {
		json_obj_begin(j, pc->sets[i].name);
		json_pages_of(j, pc->sets[i].base, pc->sets[i].pages, pc->pm_fd);
		json_obj_end(j);
	}
	json_obj_end(j);
}

/* What this process has cost so far: a kernel policy (NUMA balancing) does
 * its work in the task's own context. */
static void json_cpu(struct json *j)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		fail(errno, "getrusage: %s", strerror(errno));
	json_obj_begin(j, "cpu");
	json_uint(j, "user_us", (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec);
	json_uint(j, "sys_us", (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec);
	json_obj_end(j);
}

static void emit_event(struct pause_ctx *pc, const char *event, const char *at, const char *path)
{
	struct json j;

	json_init(&j);
	json_obj_begin(&j, NULL);
	head(&j, true);
	json_str(&j, "event", event);
	json_str(&j, "at", at);
	json_int(&j, "pause_index", pc->index);
	json_str(&j, "waiting_for", path);
	json_int(&j, "pid", getpid());
	json_cpu(&j);
	json_sets_pages(&j, pc);
	json_obj_end(&j);
	int rc = json_emit(&j, path ? cfg.ready_file : NULL);
	json_free(&j);
	if (rc)
		fail(-rc, "cannot write the pause report (--ready-file %s)",
		     cfg.ready_file ? cfg.ready_file : "-");
}

static void pause_point(struct pause_ctx *pc, const char *at)
{
	if (!cfg.pause_file)
		return;
	emit_event(pc, "pause", at, cfg.pause_file);
	enum wait_result w = wait_for_file(cfg.pause_file, (unsigned long)cfg.timeout_s);
	if (cfg.ready_file)
		unlink(cfg.ready_file);
	if (w == WAIT_TIMEOUT)
		fail(ETIMEDOUT, "timed out after %ld s waiting for %s (%s)", cfg.timeout_s,
		     cfg.pause_file, at);
	if (w == WAIT_ERROR)
		fail(errno, "waiting for %s failed: %s", cfg.pause_file, strerror(errno));
	pc->index++;
}

/* ---- modes ----------------------------------------------------------------- */

static void json_config(struct json *j)
{
	json_obj_begin(j, "config");
	json_str(j, "pattern", pattern_names[cfg.pattern]);
	json_int(j, "step", cfg.step);
	if (cfg.pattern == P_STRIDE)
		json_int(j, "stride", cfg.stride);
	if (cfg.pattern == P_RANDOM)
		json_uint(j, "seed", cfg.seed);
	json_int(j, "ratio", cfg.ratio);
	json_obj_begin(j, "mix");
	json_int(j, "reads", cfg.reads);
	json_int(j, "writes", cfg.writes);
	json_obj_end(j);
	if (cfg.seconds)
		json_int(j, "seconds", cfg.seconds);
	else
		json_int(j, "iterations", cfg.iterations);
	json_int(j, "phases", cfg.phases);
	json_int(j, "cold_ms", cfg.cold_ms);
	if (cfg.swap_at)
		json_int(j, "swap_at", cfg.swap_at);
	else
		json_null(j, "swap_at");
	json_bool(j, "unbind", cfg.seen & BIT(OPT_UNBIND));
	json_obj_end(j);
}

static void json_set_result(struct json *j, const struct set *s, int pm_fd)
{
	uint64_t loads = 0, stores = 0, ns = 0, passes = 0;

	for (long p = 0; p < cfg.phases; p++) {
		loads += s->loads[p];
		stores += s->stores[p];
		ns += s->ns[p];
		passes += s->passes[p];
	}
	json_obj_begin(j, s->name);
	json_placement(j, s);
	json_uint(j, "bytes", s->bytes);
	json_uint(j, "slots", s->slots);
	json_uint(j, "accesses_per_pass", s->slots);
	if (cfg.pattern == P_RANDOM)
		json_null(j, "accesses_per_page_per_pass");
	else
		json_uint(j, "accesses_per_page_per_pass", PAGE_SIZE_4K / (size_t)cfg.step);
	json_uint(j, "passes", passes);
	json_uint(j, "loads", loads);
	json_uint(j, "stores", stores);
	json_uint(j, "elapsed_ns", ns);
	json_arr_begin(j, "phases");
	for (long p = 0; p < cfg.phases; p++) {
		json_obj_begin(j, NULL);
		json_uint(j, "passes", s->passes[p]);
		json_uint(j, "loads", s->loads[p]);
		json_uint(j, "stores", s->stores[p]);
		json_uint(j, "elapsed_ns", s->ns[p]);
		json_obj_end(j);
	}
	json_arr_end(j);
	json_pages_of(j, s->base, s->pages, pm_fd);
	json_obj_end(j);
}

static int mode_run(void)
{
	int pm_fd = pagemap_open(0);
	struct set sets[2];
	uint64_t rng = cfg.seed, iters[MAX_PHASES] = { 0 }, elapsed = 0;
	char at[32];

	set_init(&sets[0], "hot", cfg.hot_pages, cfg.hot_node, pm_fd);
	set_init(&sets[1], "cold", cfg.cold_pages, cfg.cold_node, pm_fd);
	if (cfg.seen & BIT(OPT_UNBIND))
		for (int i = 0; i < 2; i++) {
			int rc = sets[i].node >= 0 ? unbind(sets[i].base, sets[i].bytes) : 0;
			if (rc)
				fail(-rc, "cannot drop the %s set's policy: %s", sets[i].name,
				     strerror(-rc));
		}
	struct pause_ctx pc = { .sets = sets, .nsets = 2, .pm_fd = pm_fd };

	if (cfg.seen & BIT(OPT_PRINT_PAS))
		emit_event(&pc, "pages", "before-phase-1", NULL);
	for (int p = 0; p < cfg.phases; p++) {
		if (p)
			snprintf(at, sizeof(at), "after-phase-%d", p);
		else
			snprintf(at, sizeof(at), "before-phase-1");
		pause_point(&pc, at);
		uint64_t t0 = now_ns();
		bool swapped = cfg.swap_at && p + 1 >= cfg.swap_at;
		iters[p] = swapped ? run_phase(&sets[1], &sets[0], p, &rng)
				   : run_phase(&sets[0], &sets[1], p, &rng);
		elapsed += now_ns() - t0;
	}
	snprintf(at, sizeof(at), "after-phase-%ld", cfg.phases);
	pause_point(&pc, at);

	struct json j;
	json_init(&j);
	json_obj_begin(&j, NULL);
	head(&j, true);
	json_process(&j);
	json_config(&j);
	json_arr_begin(&j, "iterations_done");
	for (long p = 0; p < cfg.phases; p++)
		json_uint(&j, NULL, iters[p]);
	json_arr_end(&j);
	json_uint(&j, "elapsed_ns", elapsed);
	json_uint(&j, "init_stores", init_stores);
	json_obj_begin(&j, "sets");
	json_set_result(&j, &sets[0], pm_fd);
	json_set_result(&j, &sets[1], pm_fd);
	json_obj_end(&j);
	json_uint(&j, "checksum", sink);
	json_obj_end(&j);
	return json_emit(&j, cfg.out) ? 1 : 0;
}

static int mode_chase(void)
{
	int pm_fd = pagemap_open(0);
	size_t lines = (size_t)cfg.lines;
	size_t pages = (lines * LINE + PAGE_SIZE_4K - 1) / PAGE_SIZE_4K;
	struct set s;
	uint64_t rng = cfg.seed;

	set_init(&s, "chase", (long)pages, cfg.node, pm_fd);
	/* Sattolo's shuffle gives a single cycle through every line, so the
	 * walk cannot settle into a short loop. */
	size_t *next = xcalloc(lines, sizeof(*next));
	for (size_t i = 0; i < lines; i++)
		next[i] = i;
	for (size_t i = lines - 1; i > 0; i--) {
		size_t k = (size_t)(xorshift64(&rng) % i), t = next[i];
		next[i] = next[k];
		next[k] = t;
	}
	for (size_t i = 0; i < lines; i++) {
		*(volatile uintptr_t *)(s.base + i * LINE) = (uintptr_t)(s.base + next[i] * LINE);
		init_stores++;
	}
	free(next);

	struct pause_ctx pc = { .sets = &s, .nsets = 1, .pm_fd = pm_fd };
	pause_point(&pc, "before-phase-1");
	uintptr_t p = (uintptr_t)s.base;
	uint64_t t0 = now_ns();
	for (long a = 0; a < cfg.accesses; a++)
		p = *(volatile uintptr_t *)p;
	uint64_t ns = now_ns() - t0;
	sink += p;
	pause_point(&pc, "after-phase-1");

	struct json j;
	json_init(&j);
	json_obj_begin(&j, NULL);
	head(&j, true);
	json_process(&j);
	json_placement(&j, &s);
	json_uint(&j, "lines", lines);
	json_uint(&j, "bytes", s.bytes);
	json_uint(&j, "seed", cfg.seed);
	json_int(&j, "accesses", cfg.accesses);
	json_int(&j, "loads", cfg.accesses);
	json_uint(&j, "elapsed_ns", ns);
	json_double(&j, "ns_per_access", (double)ns / (double)cfg.accesses);
	json_uint(&j, "init_stores", init_stores);
	json_pages_of(&j, s.base, s.pages, pm_fd);
	json_uint(&j, "checksum", sink);
	json_obj_end(&j);
	return json_emit(&j, cfg.out) ? 1 : 0;
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	return strcmp(cfg.mode, "chase") == 0 ? mode_chase() : mode_run();
}
