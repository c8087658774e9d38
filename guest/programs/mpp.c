/* mpp: allocate pages of a chosen kind, show where they are physically, and
 * call move_phys_pages(2) (the RFC) or move_pages(2) on them, printing one
 * JSON object per report on stdout. See README.md for the command line and
 * the output shapes. */
#define _GNU_SOURCE
#include "json.h"
#include "mem.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage_text[] =
	"usage: mpp COMMAND [OPTIONS]\n"
	"\n"
	"commands:\n"
	"  info                       process, nodes and whether move_phys_pages exists\n"
	"  alloc  [ALLOC]             allocate and touch pages, report VA/PA/node\n"
	"  hold   [ALLOC] WAIT [--ready-file F]\n"
	"                             report, wait, then report again what changed\n"
	"  move   [ALLOC] --to N [--back M] [--via phys|virt] [CALL]\n"
	"                             move own pages, reporting before and after\n"
	"  fork   --mappers M [ALLOC] --to N [--back M] [--via phys|virt] [CALL]\n"
	"                             like move, pages mapped by M processes;\n"
	"                             --flags defaults to move_all\n"
	"  phys   --pa PA[,PA...] (--to N[,N...] | --status) [CALL]\n"
	"                             move_phys_pages on arbitrary physical addresses\n"
	"  virt   [--pid P] --va VA[,VA...] (--to N[,N...] | --status) [CALL]\n"
	"                             move_pages on another process's addresses\n"
	"\n"
	"ALLOC:\n"
	"  --kind anon|thp|hugetlb|cow|shmem|file   (default anon)\n"
	"  --pages N          4 KiB pages, or 2 MiB pages for thp/hugetlb (default 1)\n"
	"  --mbind NODE       MPOL_BIND the region to NODE before the first touch\n"
	"  --node NODE        move_pages the touched pages to NODE (no policy left)\n"
	"  --mappers M        M processes map the pages (children touch them);\n"
	"                     cow means anon with --mappers 2\n"
	"  --mapper-writes    the children write the pages (private ones then get\n"
	"                     their own copies; their VMAs stay on the rmap)\n"
	"  --mapper-cgroup D  the children join cgroup D before touching the pages\n"
	"  --path FILE        backing file for --kind file (default: a temporary\n"
	"                     file in /dev/shm or /tmp, removed at once)\n"
	"  --subpage K        report and use 4 KiB subpage K of each 2 MiB page\n"
	"  --find-pa PA       also say which of the pages, if any, sits at PA\n"
	"  --summary          leave out the per-page arrays\n"
	"WAIT (exactly one):\n"
	"  --until-file F     poll for F, then remove it\n"
	"  --until-stdin      wait for a line or end of file on stdin\n"
	"  --until-signal     wait for SIGUSR1\n"
	"  --timeout S        give up after S seconds (default 600, 0 = never)\n"
	"CALL:\n"
	"  --flags move|move_all|none|INT   (default move)\n"
	"  --repeat R         make the call R times: min/median/max ns\n"
	"  --stale            (move --via phys) reuse the first PAs on every repeat\n"
	"  --force-syscall    call the move_phys_pages number even where the\n"
	"                     kernel does not seem to have it\n"
	"common:\n"
	"  --out FILE         also write the (last) report to FILE atomically\n"
	"\n"
	"Exit status: 0 the report was made (a failing syscall is a result, see\n"
	"\"ret\" and \"errno\"), 1 the tool could not do its part, 2 usage error.\n";

enum kind { K_ANON, K_THP, K_HUGETLB, K_COW, K_SHMEM, K_FILE };
static const char *const kind_names[] = { "anon", "thp", "hugetlb", "cow", "shmem", "file" };

enum opt_id {
	OPT_KIND = 1,
	OPT_PAGES,
	OPT_MBIND,
	OPT_NODE,
	OPT_MAPPERS,
	OPT_MAPPER_WRITES,
	OPT_MAPPER_CGROUP,
	OPT_PATH,
	OPT_SUBPAGE,
	OPT_FIND_PA,
	OPT_SUMMARY,
	OPT_UNTIL_FILE,
	OPT_UNTIL_STDIN,
	OPT_UNTIL_SIGNAL,
	OPT_TIMEOUT,
	OPT_READY_FILE,
	OPT_TO,
	OPT_BACK,
	OPT_STATUS,
	OPT_VIA,
	OPT_FLAGS,
	OPT_REPEAT,
	OPT_STALE,
	OPT_FORCE,
	OPT_PA,
	OPT_VA,
	OPT_PID,
	OPT_OUT,
	OPT_HELP,
	OPT_COUNT
};

#define BIT(o) (1ULL << (o))
#define ALLOC_OPTS                                                                              \
	(BIT(OPT_KIND) | BIT(OPT_PAGES) | BIT(OPT_MBIND) | BIT(OPT_NODE) | BIT(OPT_MAPPERS) | BIT(OPT_PATH) | \
	 BIT(OPT_SUBPAGE) | BIT(OPT_FIND_PA) | BIT(OPT_SUMMARY) | BIT(OPT_MAPPER_WRITES) |     \
	 BIT(OPT_MAPPER_CGROUP))
#define WAIT_OPTS \
	(BIT(OPT_UNTIL_FILE) | BIT(OPT_UNTIL_STDIN) | BIT(OPT_UNTIL_SIGNAL) | BIT(OPT_TIMEOUT) | BIT(OPT_READY_FILE))
#define CALL_OPTS (BIT(OPT_FLAGS) | BIT(OPT_REPEAT) | BIT(OPT_FORCE))
#define COMMON_OPTS (BIT(OPT_OUT) | BIT(OPT_HELP))

static const struct option long_opts[] = {
	{ "kind", required_argument, NULL, OPT_KIND },
	{ "pages", required_argument, NULL, OPT_PAGES },
	{ "mbind", required_argument, NULL, OPT_MBIND },
	{ "node", required_argument, NULL, OPT_NODE },
	{ "mappers", required_argument, NULL, OPT_MAPPERS },
	{ "mapper-writes", no_argument, NULL, OPT_MAPPER_WRITES },
	{ "mapper-cgroup", required_argument, NULL, OPT_MAPPER_CGROUP },
	{ "path", required_argument, NULL, OPT_PATH },
	{ "subpage", required_argument, NULL, OPT_SUBPAGE },
	{ "find-pa", required_argument, NULL, OPT_FIND_PA },
	{ "summary", no_argument, NULL, OPT_SUMMARY },
	{ "until-file", required_argument, NULL, OPT_UNTIL_FILE },
	{ "until-stdin", no_argument, NULL, OPT_UNTIL_STDIN },
	{ "until-signal", no_argument, NULL, OPT_UNTIL_SIGNAL },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "ready-file", required_argument, NULL, OPT_READY_FILE },
	{ "to", required_argument, NULL, OPT_TO },
	{ "back", required_argument, NULL, OPT_BACK },
	{ "status", no_argument, NULL, OPT_STATUS },
	{ "via", required_argument, NULL, OPT_VIA },
	{ "flags", required_argument, NULL, OPT_FLAGS },
	{ "repeat", required_argument, NULL, OPT_REPEAT },
	{ "stale", no_argument, NULL, OPT_STALE },
	{ "force-syscall", no_argument, NULL, OPT_FORCE },
	{ "pa", required_argument, NULL, OPT_PA },
	{ "va", required_argument, NULL, OPT_VA },
	{ "pid", required_argument, NULL, OPT_PID },
	{ "out", required_argument, NULL, OPT_OUT },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* The node numbers any call accepts; the kernel rejects what is not online. */
#define MAX_NODE 1023
/* Keeps reports a readable size; timing keeps every sample up to this. */
#define MAX_SAMPLES_LISTED 1000
#define PATTERN 0x6d70702d70616765ULL /* "mpp-page" */

struct opts {
	const char *cmd;
	unsigned long long seen;
	enum kind kind;
	long pages;
	int mbind_node;
	int node;
	long mappers;
	bool mapper_writes;
	const char *mapper_cgroup;
	const char *path;
	long subpage;
	bool find;
	uint64_t find_pa;
	bool summary;
	const char *until_file;
	long timeout_s;
	const char *ready_file;
	int *to;
	size_t nto;
	int back;
	bool via_phys;
	int flags;
	const char *flags_name;
	long repeat;
	uint64_t *pas;
	size_t npa;
	uint64_t *vas;
	size_t nva;
	long pid;
	const char *out;
};

static struct opts o = {
	.kind = K_ANON,
	.pages = 1,
	.mbind_node = -1,
	.node = -1,
	.mappers = 0,
	.timeout_s = 600,
	.back = -1,
	.via_phys = true,
	.flags = CXL_MPOL_MF_MOVE,
	.flags_name = "move",
	.repeat = 1,
};

/* ---- reporting failures ------------------------------------------------ */

/* Filled at each call: the subcommand and --out are known only after parsing. */
static const struct json_prog *whoami(void)
{
	static struct json_prog p;

	p = (struct json_prog){ "mpp", "cmd", o.cmd, o.out, usage_text };
	return &p;
}

static void report_head(struct json *j, bool ok)
{
	json_prog_head(j, whoami(), ok);
}

#define fail(err, ...) json_prog_fail(whoami(), 1, (err), __VA_ARGS__)
#define usage(...) json_prog_fail(whoami(), 2, 0, __VA_ARGS__)

/* ---- option parsing ----------------------------------------------------- */

static int parse_node(const char *name, const char *s)
{
	long v;

	if (!parse_long_range(s, 0, MAX_NODE, &v))
		usage("%s wants a node number 0..%d, got '%s'", name, MAX_NODE, s);
	return (int)v;
}

static long parse_count(const char *name, const char *s, long min, long max)
{
	long v;

	if (!parse_long_range(s, min, max, &v))
		usage("%s wants a number %ld..%ld, got '%s'", name, min, max, s);
	return v;
}

static void parse_flags(const char *s)
{
	uint64_t v;

	if (strcmp(s, "move") == 0) {
		o.flags = CXL_MPOL_MF_MOVE;
	} else if (strcmp(s, "move_all") == 0) {
		o.flags = CXL_MPOL_MF_MOVE_ALL;
	} else if (strcmp(s, "none") == 0) {
		o.flags = 0;
	} else if (parse_u64(s, 0, &v) && v <= INT_MAX) {
		/* Raw values exist to provoke EINVAL on purpose. */
		o.flags = (int)v;
	} else {
		usage("--flags wants move, move_all, none or a number, got '%s'", s);
	}
	o.flags_name = s;
}

static unsigned long long allowed_for(const char *cmd)
{
	if (strcmp(cmd, "info") == 0)
		return COMMON_OPTS | BIT(OPT_FORCE);
	if (strcmp(cmd, "alloc") == 0)
		return COMMON_OPTS | ALLOC_OPTS;
	if (strcmp(cmd, "hold") == 0)
		return COMMON_OPTS | ALLOC_OPTS | WAIT_OPTS;
	if (strcmp(cmd, "move") == 0 || strcmp(cmd, "fork") == 0)
		return COMMON_OPTS | ALLOC_OPTS | CALL_OPTS | BIT(OPT_TO) | BIT(OPT_BACK) | BIT(OPT_VIA) |
		       BIT(OPT_STALE);
	if (strcmp(cmd, "phys") == 0)
		return COMMON_OPTS | CALL_OPTS | BIT(OPT_PA) | BIT(OPT_TO) | BIT(OPT_STATUS);
	if (strcmp(cmd, "virt") == 0)
		return COMMON_OPTS | BIT(OPT_FLAGS) | BIT(OPT_REPEAT) | BIT(OPT_PID) | BIT(OPT_VA) |
		       BIT(OPT_TO) | BIT(OPT_STATUS);
	return 0;
}

static const char *opt_name(int id)
{
	for (const struct option *p = long_opts; p->name; p++)
		if (p->val == id)
			return p->name;
	return "?";
}

static bool seen(int id)
{
	return o.seen & BIT(id);
}

static void parse_args(int argc, char **argv)
{
	if (argc < 2)
		usage("a command is needed");
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_text, stdout);
		exit(0);
	}
	o.cmd = argv[1];
	unsigned long long allowed = allowed_for(o.cmd);
	if (!allowed) {
		const char *cmd = o.cmd;
		o.cmd = NULL;
		usage("unknown command '%s'", cmd);
	}
	/* getopt_long would otherwise print its own messages. */
	opterr = 0;
	optind = 2;
	int c;
	while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		if (c == '?')
			usage("unknown option '%s'", argv[optind - 1]);
		if (c == ':')
			usage("option '%s' needs a value", argv[optind - 1]);
		if (c == 'h')
			c = OPT_HELP;
		if (!(allowed & BIT(c)))
			usage("--%s is not an option of 'mpp %s'", opt_name(c), o.cmd);
		if (seen(c))
			usage("--%s given twice", opt_name(c));
		o.seen |= BIT(c);
		switch (c) {
		case OPT_HELP:
			fputs(usage_text, stdout);
			exit(0);
		case OPT_KIND: {
			size_t k;
			for (k = 0; k < sizeof(kind_names) / sizeof(kind_names[0]); k++)
				if (strcmp(optarg, kind_names[k]) == 0)
					break;
			if (k == sizeof(kind_names) / sizeof(kind_names[0]))
				usage("--kind wants anon, thp, hugetlb, cow, shmem or file, got '%s'",
				      optarg);
			o.kind = (enum kind)k;
			break;
		}
		case OPT_PAGES:
			o.pages = parse_count("--pages", optarg, 1, 1L << 24);
			break;
		case OPT_MBIND:
			o.mbind_node = parse_node("--mbind", optarg);
			break;
		case OPT_NODE:
			o.node = parse_node("--node", optarg);
			break;
		case OPT_MAPPERS:
			o.mappers = parse_count("--mappers", optarg, 1, 4096);
			break;
		case OPT_MAPPER_WRITES:
			o.mapper_writes = true;
			break;
		case OPT_MAPPER_CGROUP:
			o.mapper_cgroup = optarg;
			break;
		case OPT_PATH:
			o.path = optarg;
			break;
		case OPT_SUBPAGE:
			o.subpage = parse_count("--subpage", optarg, 0, 511);
			break;
		case OPT_FIND_PA:
			if (!parse_u64(optarg, 16, &o.find_pa))
				usage("--find-pa wants a hex address, got '%s'", optarg);
			o.find = true;
			break;
		case OPT_SUMMARY:
			o.summary = true;
			break;
		case OPT_UNTIL_FILE:
			o.until_file = optarg;
			break;
		case OPT_UNTIL_STDIN:
		case OPT_UNTIL_SIGNAL:
			break;
		case OPT_TIMEOUT:
			o.timeout_s = parse_count("--timeout", optarg, 0, 1L << 30);
			break;
		case OPT_READY_FILE:
			o.ready_file = optarg;
			break;
		case OPT_TO:
			if (!parse_int_list(optarg, 0, MAX_NODE, &o.to, &o.nto))
				usage("--to wants node numbers separated by commas, got '%s'", optarg);
			break;
		case OPT_BACK:
			o.back = parse_node("--back", optarg);
			break;
		case OPT_STATUS:
			break;
		case OPT_VIA:
			if (strcmp(optarg, "phys") == 0)
				o.via_phys = true;
			else if (strcmp(optarg, "virt") == 0)
				o.via_phys = false;
			else
				usage("--via wants phys or virt, got '%s'", optarg);
			break;
		case OPT_FLAGS:
			parse_flags(optarg);
			break;
		case OPT_REPEAT:
			o.repeat = parse_count("--repeat", optarg, 1, 1000000);
			break;
		case OPT_STALE:
		case OPT_FORCE:
			break;
		case OPT_PA:
			if (!parse_u64_list(optarg, 16, &o.pas, &o.npa))
				usage("--pa wants hex addresses separated by commas, got '%s'", optarg);
			break;
		case OPT_VA:
			if (!parse_u64_list(optarg, 16, &o.vas, &o.nva))
				usage("--va wants hex addresses separated by commas, got '%s'", optarg);
			break;
		case OPT_PID:
			o.pid = parse_count("--pid", optarg, 0, INT_MAX);
			break;
		case OPT_OUT:
			o.out = optarg;
			break;
		}
	}
	if (optind < argc)
		usage("unexpected argument '%s'", argv[optind]);

	bool big = o.kind == K_THP || o.kind == K_HUGETLB;
	if (seen(OPT_SUBPAGE) && !big)
		usage("--subpage only applies to --kind thp or hugetlb");
	if (seen(OPT_PATH) && o.kind != K_FILE)
		usage("--path only applies to --kind file");
	if (o.kind == K_COW) {
		if (!seen(OPT_MAPPERS))
			o.mappers = 2;
		else if (o.mappers < 2)
			usage("--kind cow needs --mappers 2 or more");
	}
	if (strcmp(o.cmd, "fork") == 0) {
		if (!seen(OPT_MAPPERS))
			usage("'mpp fork' needs --mappers M");
		if (!seen(OPT_FLAGS)) {
			o.flags = CXL_MPOL_MF_MOVE_ALL;
			o.flags_name = "move_all";
		}
	}
	if (!o.mappers)
		o.mappers = 1;
	if ((o.mapper_writes || o.mapper_cgroup) && o.mappers < 2)
		usage("--mapper-writes and --mapper-cgroup need --mappers 2 or more (or --kind cow)");
	if (strcmp(o.cmd, "hold") == 0) {
		int waits = seen(OPT_UNTIL_FILE) + seen(OPT_UNTIL_STDIN) + seen(OPT_UNTIL_SIGNAL);
		if (waits != 1)
			usage("'mpp hold' needs exactly one of --until-file, --until-stdin, "
			      "--until-signal");
	}
	if (strcmp(o.cmd, "move") == 0 || strcmp(o.cmd, "fork") == 0) {
		if (!seen(OPT_TO))
			usage("'mpp %s' needs --to NODE", o.cmd);
		if (o.nto != 1)
			usage("'mpp %s' takes one --to node (use --back for ping-pong)", o.cmd);
		if (seen(OPT_STALE) && !o.via_phys)
			usage("--stale only applies to --via phys");
	}
	if (strcmp(o.cmd, "phys") == 0 || strcmp(o.cmd, "virt") == 0) {
		bool phys = strcmp(o.cmd, "phys") == 0;
		size_t n = phys ? o.npa : o.nva;
		if (!n)
			usage("'mpp %s' needs %s", o.cmd, phys ? "--pa PA[,PA...]" : "--va VA[,VA...]");
		if (seen(OPT_TO) == seen(OPT_STATUS))
			usage("'mpp %s' needs exactly one of --to and --status", o.cmd);
		if (seen(OPT_TO) && o.nto != 1 && o.nto != n)
			usage("--to wants one node or one per address (%zu), got %zu", n, o.nto);
	}
}

/* ---- the pages --------------------------------------------------------- */

struct region {
	char *base;
	size_t unit;
	size_t count;
	size_t len;
	int fd;
	char path[PATH_MAX];
	bool path_kept;
	int mbind_err; /* 0, or errno of mbind */
	long place_ret;
	int place_err;
	size_t place_failed;
	pid_t children[4096];
	size_t nchildren;
	int release_fd;
	long anon_huge_kb; /* from smaps; -1 unknown */
	const char *warning;
};

static long meminfo_value(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	long v = -1;
	size_t klen = strlen(key);

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtol(line + klen + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* AnonHugePages of the mapping that starts at base: readable without
 * privilege, unlike kpageflags. */
static long smaps_anon_huge_kb(const char *base)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool in = false;
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end;

		if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
			if (in)
				break;
			in = start <= (uintptr_t)base && (uintptr_t)base < end;
			continue;
		}
		if (in && strncmp(line, "AnonHugePages:", 14) == 0) {
			kb = strtol(line + 14, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

static void open_backing_file(struct region *r)
{
	if (o.path) {
		snprintf(r->path, sizeof(r->path), "%s", o.path);
		r->fd = open(r->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		r->path_kept = true;
	} else {
		struct stat st;
		const char *dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
		snprintf(r->path, sizeof(r->path), "%s/mpp-file.XXXXXX", dir);
		r->fd = mkostemp(r->path, O_CLOEXEC);
	}
	if (r->fd < 0)
		fail(errno, "cannot open backing file %s: %s", r->path, strerror(errno));
	if (ftruncate(r->fd, (off_t)r->len) < 0)
		fail(errno, "cannot size %s to %zu bytes: %s", r->path, r->len, strerror(errno));
}

static void map_region(struct region *r)
{
	int prot = PROT_READ | PROT_WRITE;
	void *p;

	switch (o.kind) {
	case K_ANON:
	case K_COW:
		p = mmap(NULL, r->len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			fail(errno, "mmap of %zu bytes failed: %s", r->len, strerror(errno));
		/* Base pages keep "one PFN = one page" true for these kinds. */
		madvise(p, r->len, MADV_NOHUGEPAGE);
		r->base = p;
		break;
	case K_THP: {
		/* Over-allocate so a 2 MiB-aligned stretch exists; a PMD mapping
		 * needs that alignment. */
		size_t map_len = r->len + HUGE_SIZE_2M;
		p = mmap(NULL, map_len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			fail(errno, "mmap of %zu bytes failed: %s", map_len, strerror(errno));
		uintptr_t start = ((uintptr_t)p + HUGE_SIZE_2M - 1) & ~(HUGE_SIZE_2M - 1);
		if (start > (uintptr_t)p)
			munmap(p, start - (uintptr_t)p);
		uintptr_t end = (uintptr_t)p + map_len;
		if (end > start + r->len)
			munmap((void *)(start + r->len), end - start - r->len);
		r->base = (char *)start;
		if (madvise(r->base, r->len, MADV_HUGEPAGE) < 0)
			fail(errno, "madvise(MADV_HUGEPAGE) failed: %s (kernel without transparent "
				    "hugepages?)", strerror(errno));
		break;
	}
	case K_HUGETLB:
		p = mmap(NULL, r->len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (p == MAP_FAILED) {
			int err = errno;
			fail(err, "mmap(MAP_HUGETLB) of %zu x 2 MiB failed: %s (HugePages_Free=%ld, "
				  "Hugepagesize=%ld kB; reserve pages with "
				  "'echo N > /proc/sys/vm/nr_hugepages')",
			     r->count, strerror(err), meminfo_value("HugePages_Free"),
			     meminfo_value("Hugepagesize"));
		}
		r->base = p;
		break;
	case K_SHMEM:
		r->fd = memfd_create("mpp-shmem", MFD_CLOEXEC);
		if (r->fd < 0)
			fail(errno, "memfd_create failed: %s", strerror(errno));
		snprintf(r->path, sizeof(r->path), "memfd:mpp-shmem");
		if (ftruncate(r->fd, (off_t)r->len) < 0)
			fail(errno, "cannot size the memfd: %s", strerror(errno));
		goto shared;
	case K_FILE:
		open_backing_file(r);
	shared:
		p = mmap(NULL, r->len, prot, MAP_SHARED, r->fd, 0);
		if (p == MAP_FAILED)
			fail(errno, "mmap of %s failed: %s", r->path, strerror(errno));
		madvise(p, r->len, MADV_NOHUGEPAGE);
		r->base = p;
		/* The mapping keeps the file alive; nothing is left behind. */
		if (o.kind == K_FILE && !r->path_kept)
			unlink(r->path);
		break;
	}
}

static void touch_region(const struct region *r)
{
	for (size_t off = 0; off < r->len; off += PAGE_SIZE_4K)
		*(volatile uint64_t *)(r->base + off) = PATTERN ^ off;
}

static size_t count_mismatches(const struct region *r)
{
	size_t bad = 0;

	for (size_t off = 0; off < r->len; off += PAGE_SIZE_4K)
		bad += *(volatile uint64_t *)(r->base + off) != (PATTERN ^ off);
	return bad;
}

static uint64_t unit_va(const struct region *r, size_t i)
{
	return (uint64_t)(uintptr_t)r->base + i * r->unit + (uint64_t)o.subpage * PAGE_SIZE_4K;
}

static void place_with_move_pages(struct region *r)
{
	void **ptrs = xcalloc(r->count, sizeof(*ptrs));
	int *nodes = xcalloc(r->count, sizeof(*nodes));
	int *status = xcalloc(r->count, sizeof(*status));

	for (size_t i = 0; i < r->count; i++) {
		ptrs[i] = r->base + i * r->unit;
		nodes[i] = o.node;
		status[i] = STATUS_UNTOUCHED;
	}
	r->place_ret = sys_move_pages(0, r->count, ptrs, nodes, status, CXL_MPOL_MF_MOVE,
				      &r->place_err);
	for (size_t i = 0; i < r->count; i++)
		r->place_failed += status[i] != o.node;
	free(ptrs);
	free(nodes);
	free(status);
}

/* Moves this process into cgroup @dir (cgroup v2); 0 or -1. */
static int join_cgroup(const char *dir)
{
	char path[4096], pid[32];
	int fd, len, ok;

	if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
		return -1;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	len = snprintf(pid, sizeof(pid), "%d", (int)getpid());
	ok = write(fd, pid, (size_t)len) == len;
	close(fd);
	return ok ? 0 : -1;
}

/* Each child maps the pages too (reading every 4 KiB page, so shared
 * mappings get page-table entries; private pages stay shared with the
 * parent), then blocks until the parent goes away. */
static void spawn_mappers(struct region *r)
{
	int release[2], ready[2];

	if (pipe2(release, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0)
		fail(errno, "pipe failed: %s", strerror(errno));
	fflush(NULL);
	for (long m = 1; m < o.mappers; m++) {
		pid_t pid = fork();

		if (pid < 0)
			fail(errno, "fork of mapper %ld failed: %s", m, strerror(errno));
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(release[1]);
			close(ready[0]);
			if (o.mapper_cgroup && join_cgroup(o.mapper_cgroup) != 0)
				_exit(1);
			uint64_t sink = 0;
			for (size_t off = 0; off < r->len; off += PAGE_SIZE_4K) {
				volatile uint64_t *word = (volatile uint64_t *)(r->base + off);
				sink += *word;
				if (o.mapper_writes)
					*word = *word;
			}
			char c = (char)(sink & 1);
			if (write(ready[1], &c, 1) != 1)
				_exit(1);
			while (read(release[0], &c, 1) > 0)
				;
			_exit(0);
		}
		r->children[r->nchildren++] = pid;
	}
	close(release[0]);
	close(ready[1]);
	for (long m = 1; m < o.mappers; m++) {
		char c;
		if (read(ready[0], &c, 1) != 1)
			fail(0, "a mapper process died before mapping the pages%s",
			     o.mapper_cgroup ? " (could it join --mapper-cgroup?)" : "");
	}
	close(ready[0]);
	/* Exiting closes this end; every child then sees EOF and exits. */
	r->release_fd = release[1];
}

static void make_region(struct region *r)
{
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->release_fd = -1;
	r->anon_huge_kb = -1;
	bool big = o.kind == K_THP || o.kind == K_HUGETLB;
	r->unit = big ? HUGE_SIZE_2M : PAGE_SIZE_4K;
	r->count = (size_t)o.pages;
	r->len = r->unit * r->count;
	map_region(r);
	if (o.mbind_node >= 0) {
		r->mbind_err = -bind_to_node(r->base, r->len, o.mbind_node);
		if (r->mbind_err)
			fail(r->mbind_err, "mbind(MPOL_BIND, node %d) failed: %s", o.mbind_node,
			     strerror(r->mbind_err));
	}
	touch_region(r);
	if (o.node >= 0)
		place_with_move_pages(r);
	if (o.kind == K_THP) {
		r->anon_huge_kb = smaps_anon_huge_kb(r->base);
		if (r->anon_huge_kb == 0)
			r->warning = "no transparent hugepage was allocated (THP disabled or memory "
				     "fragmented): the region is backed by 4 KiB pages";
	}
	if (o.mappers > 1)
		spawn_mappers(r);
}

static struct page_view *view_region(const struct region *r, int pm_fd)
{
	uint64_t *vas = xcalloc(r->count, sizeof(*vas));
	struct page_view *v = xcalloc(r->count, sizeof(*v));

	for (size_t i = 0; i < r->count; i++)
		vas[i] = unit_va(r, i);
	view_pages(0, pm_fd, vas, r->count, v);
	free(vas);
	return v;
}

static void json_region(struct json *j, const struct region *r)
{
	json_obj_begin(j, "region");
	json_str(j, "kind", kind_names[o.kind]);
	json_hex(j, "base", (uint64_t)(uintptr_t)r->base);
	json_uint(j, "unit_bytes", r->unit);
	json_uint(j, "count", r->count);
	json_uint(j, "bytes", r->len);
	json_int(j, "subpage", o.subpage);
	if (o.mbind_node >= 0)
		json_int(j, "mbind", o.mbind_node);
	else
		json_null(j, "mbind");
	if (o.node >= 0) {
		json_obj_begin(j, "placed");
		json_int(j, "node", o.node);
		json_int(j, "ret", r->place_ret);
		json_str(j, "errno", r->place_ret < 0 ? errno_name(r->place_err) : NULL);
		json_uint(j, "failed", r->place_failed);
		json_obj_end(j);
	} else {
		json_null(j, "placed");
	}
	json_int(j, "mappers", o.mappers);
	json_bool(j, "mapper_writes", o.mapper_writes);
	json_arr_begin(j, "mapper_pids");
	for (size_t i = 0; i < r->nchildren; i++)
		json_int(j, NULL, r->children[i]);
	json_arr_end(j);
	if (o.kind == K_FILE || o.kind == K_SHMEM)
		json_str(j, "path", r->path);
	if (o.kind == K_FILE)
		json_bool(j, "path_kept", r->path_kept);
	if (o.kind == K_THP) {
		if (r->anon_huge_kb >= 0)
			json_int(j, "anon_huge_kb", r->anon_huge_kb);
		else
			json_null(j, "anon_huge_kb");
	}
	json_str(j, "warning", r->warning);
	json_obj_end(j);
}

/* Pages array and node counts, inline or under key. */
static void json_pages(struct json *j, const char *key, const struct page_view *v, size_t n)
{
	if (key)
		json_obj_begin(j, key);
	if (!o.summary) {
		json_arr_begin(j, "pages");
		for (size_t i = 0; i < n; i++)
			json_page_view(j, &v[i], (long)i);
		json_arr_end(j);
	}
	json_node_counts(j, v, n);
	if (key)
		json_obj_end(j);
}

/* Looks through every 4 KiB page of the region, not just the reported
 * subpages, since a stale address can point anywhere inside a huge page. */
static void json_find(struct json *j, const struct region *r, int pm_fd)
{
	if (!o.find)
		return;
	json_obj_begin(j, "find");
	json_hex(j, "pa", o.find_pa);
	bool found = false, hidden = false;
	for (size_t off = 0; off < r->len && !found; off += PAGE_SIZE_4K) {
		struct pm_entry e;
		if (pagemap_get(pm_fd, (uintptr_t)r->base + off, &e) < 0 || !e.present)
			continue;
		if (!e.pfn) {
			hidden = true;
			break;
		}
		if (e.pfn == o.find_pa / PAGE_SIZE_4K) {
			found = true;
			json_hex(j, "va", (uintptr_t)r->base + off + o.find_pa % PAGE_SIZE_4K);
			json_uint(j, "offset", off);
		}
	}
	json_bool(j, "found", found);
	if (hidden)
		json_str(j, "reason", "PFNs hidden without CAP_SYS_ADMIN");
	json_obj_end(j);
}

/* ---- calls --------------------------------------------------------------- */

struct call {
	const char *name;
	bool phys;
	pid_t pid;
	size_t n;
	uint64_t *addrs;
	int *nodes; /* NULL: status only */
	int *status;
	int flags;
	bool called;
	const char *not_called_why;
	long ret;
	int err;
	uint64_t ns;
};

static void call_init(struct call *c, bool phys, size_t n)
{
	memset(c, 0, sizeof(*c));
	c->name = phys ? "move_phys_pages" : "move_pages";
	c->phys = phys;
	c->n = n;
	c->addrs = xcalloc(n, sizeof(*c->addrs));
	c->nodes = xcalloc(n, sizeof(*c->nodes));
	c->status = xcalloc(n, sizeof(*c->status));
	c->flags = o.flags;
}

static void call_copy(struct call *dst, const struct call *src)
{
	uint64_t *a = dst->addrs;
	int *nodes = dst->nodes, *st = dst->status;

	*dst = *src;
	dst->addrs = memcpy(a, src->addrs, src->n * sizeof(*a));
	dst->nodes = src->nodes ? memcpy(nodes, src->nodes, src->n * sizeof(*nodes)) : NULL;
	dst->status = memcpy(st, src->status, src->n * sizeof(*st));
}

static void call_run(struct call *c, const struct syscall_probe *probe)
{
	for (size_t i = 0; i < c->n; i++)
		c->status[i] = STATUS_UNTOUCHED;
	if (c->phys && !probe->call) {
		/* Reported as the kernel would answer if the number were free. */
		c->called = false;
		c->not_called_why = probe->how;
		c->ret = -1;
		c->err = ENOSYS;
		c->ns = 0;
		return;
	}
	c->called = true;
	uint64_t t0 = now_ns();
	if (c->phys) {
		c->ret = sys_move_phys_pages(c->n, c->addrs, c->nodes, c->status, c->flags, &c->err);
	} else {
		/* Pointer-sized entries: on x86_64 the u64 array already is one. */
		void **ptrs = sizeof(void *) == sizeof(uint64_t) ? (void **)c->addrs
			: xcalloc(c->n ? c->n : 1, sizeof(*ptrs));
		if ((void *)ptrs != (void *)c->addrs)
			for (size_t i = 0; i < c->n; i++)
				ptrs[i] = (void *)(uintptr_t)c->addrs[i];
		c->ret = sys_move_pages(c->pid, c->n, ptrs, c->nodes, c->status, c->flags, &c->err);
		if ((void *)ptrs != (void *)c->addrs)
			free(ptrs);
	}
	c->ns = now_ns() - t0;
}

static void json_status_text(struct json *j, int s)
{
	char buf[32];

	if (s == STATUS_UNTOUCHED) {
		json_str(j, NULL, "untouched");
	} else if (s >= 0) {
		snprintf(buf, sizeof(buf), "node %d", s);
		json_str(j, NULL, buf);
	} else {
		json_str(j, NULL, errno_name(-s));
	}
}

static void json_call(struct json *j, const char *key, const struct call *c)
{
	json_obj_begin(j, key);
	json_str(j, "syscall", c->name);
	if (!c->phys)
		json_int(j, "pid", c->pid);
	json_bool(j, "called", c->called);
	if (!c->called)
		json_str(j, "why_not_called", c->not_called_why);
	json_int(j, "flags", c->flags);
	json_str(j, "flags_name", o.flags_name);
	json_uint(j, "n", c->n);
	json_arr_begin(j, "addrs");
	for (size_t i = 0; i < c->n; i++)
		json_hex(j, NULL, c->addrs[i]);
	json_arr_end(j);
	if (c->nodes) {
		json_arr_begin(j, "nodes");
		for (size_t i = 0; i < c->n; i++)
			json_int(j, NULL, c->nodes[i]);
		json_arr_end(j);
	} else {
		json_null(j, "nodes");
	}
	json_int(j, "ret", c->ret);
	json_str(j, "errno", c->ret < 0 ? errno_name(c->err) : NULL);
	json_uint(j, "ns", c->ns);
	json_arr_begin(j, "status");
	for (size_t i = 0; i < c->n; i++)
		json_int(j, NULL, c->status[i]);
	json_arr_end(j);
	json_arr_begin(j, "status_text");
	for (size_t i = 0; i < c->n; i++)
		json_status_text(j, c->status[i]);
	json_arr_end(j);
	json_obj_end(j);
}

struct timing {
	uint64_t *ns;
	size_t n;
	size_t failed; /* calls whose return value was not 0 */
};

static void json_timing(struct json *j, struct timing *t)
{
	uint64_t sum = 0;

	json_obj_begin(j, "timing");
	json_uint(j, "repeat", t->n);
	json_uint(j, "nonzero_returns", t->failed);
	if (t->n > 0 && t->n <= MAX_SAMPLES_LISTED) {
		json_arr_begin(j, "ns");
		for (size_t i = 0; i < t->n; i++)
			json_uint(j, NULL, t->ns[i]);
		json_arr_end(j);
	}
	for (size_t i = 0; i < t->n; i++)
		sum += t->ns[i];
	qsort(t->ns, t->n, sizeof(*t->ns), cmp_u64);
	json_uint(j, "min_ns", t->n ? t->ns[0] : 0);
	json_uint(j, "median_ns", t->n ? t->ns[t->n / 2] : 0);
	json_uint(j, "max_ns", t->n ? t->ns[t->n - 1] : 0);
	json_uint(j, "mean_ns", t->n ? sum / t->n : 0);
	json_obj_end(j);
}

static void json_syscall_info(struct json *j, const struct syscall_probe *p)
{
	json_obj_begin(j, "move_phys_pages");
	json_int(j, "nr", NR_MOVE_PHYS_PAGES);
	json_bool(j, "will_call", p->call);
	json_str(j, "probe", p->how);
	json_obj_end(j);
}

/* Frames as the kernel describes them (root only: kpageflags). */
static void json_frames(struct json *j, const char *key, const uint64_t *pas, size_t n)
{
	if (access("/proc/kpageflags", R_OK) != 0)
		return;
	json_arr_begin(j, key);
	for (size_t i = 0; i < n; i++)
		json_frame(j, pas[i]);
	json_arr_end(j);
}

/* ---- commands ------------------------------------------------------------ */

static int cmd_info(void)
{
	struct syscall_probe probe = probe_move_phys_pages(seen(OPT_FORCE));
	struct json j;
	FILE *f;
	char thp[128] = "";

	json_init(&j);
	json_obj_begin(&j, NULL);
	report_head(&j, true);
	json_process(&j);
	json_str(&j, "nodes_online", nodes_online());
	json_syscall_info(&j, &probe);
	json_int(&j, "hugepages_free", meminfo_value("HugePages_Free"));
	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
	if (f) {
		if (!fgets(thp, sizeof(thp), f))
			thp[0] = '\0';
		thp[strcspn(thp, "\n")] = '\0';
		fclose(f);
	}
	json_str(&j, "thp_enabled", thp[0] ? thp : NULL);
	json_bool(&j, "kpageflags_readable", access("/proc/kpageflags", R_OK) == 0);
	json_obj_end(&j);
	return json_emit(&j, o.out) ? 1 : 0;
}

static void report_alloc(struct json *j, const struct region *r, const struct page_view *v,
			 int pm_fd, const char *phase, bool ok)
{
	json_obj_begin(j, NULL);
	report_head(j, ok);
	if (phase)
		json_str(j, "phase", phase);
	json_process(j);
	json_region(j, r);
	json_pages(j, NULL, v, r->count);
	json_find(j, r, pm_fd);
	size_t bad = count_mismatches(r);
	json_bool(j, "data_ok", bad == 0);
	json_uint(j, "data_mismatches", bad);
}

static int cmd_alloc(void)
{
	struct region r;
	struct json j;

	make_region(&r);
	int pm_fd = pagemap_open(0);
	struct page_view *v = view_region(&r, pm_fd);
	json_init(&j);
	report_alloc(&j, &r, v, pm_fd, NULL, true);
	json_obj_end(&j);
	return json_emit(&j, o.out) ? 1 : 0;
}

static int cmd_hold(void)
{
	struct region r;
	struct json j;
	sigset_t set;

	/* Blocked before the first report, so a signal sent as soon as the
	 * report is seen is not lost. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	if (seen(OPT_UNTIL_SIGNAL))
		sigprocmask(SIG_BLOCK, &set, NULL);
	make_region(&r);
	int pm_fd = pagemap_open(0);
	struct page_view *before = view_region(&r, pm_fd);
	json_init(&j);
	report_alloc(&j, &r, before, pm_fd, "before", true);
	json_str(&j, "waiting_for",
		 seen(OPT_UNTIL_FILE) ? o.until_file : seen(OPT_UNTIL_STDIN) ? "stdin" : "SIGUSR1");
	json_obj_end(&j);
	int rc = json_emit(&j, o.ready_file);
	if (rc)
		fail(-rc, "cannot write the report (--ready-file %s)", o.ready_file ? o.ready_file : "-");

	enum wait_result w;
	if (seen(OPT_UNTIL_FILE)) {
		w = wait_for_file(o.until_file, (unsigned long)o.timeout_s);
	} else if (seen(OPT_UNTIL_STDIN)) {
		w = wait_for_stdin((unsigned long)o.timeout_s);
	} else {
		struct timespec ts = { .tv_sec = o.timeout_s };
		int s;
		do
			s = sigtimedwait(&set, NULL, o.timeout_s ? &ts : NULL);
		while (s < 0 && errno == EINTR);
		w = s == SIGUSR1 ? WAIT_OK : errno == EAGAIN ? WAIT_TIMEOUT : WAIT_ERROR;
	}

	struct page_view *after = view_region(&r, pm_fd);
	size_t moved = 0, renoded = 0;
	json_reset(&j);
	report_alloc(&j, &r, after, pm_fd, "after", w == WAIT_OK);
	json_str(&j, "wait", w == WAIT_OK ? "released" : w == WAIT_TIMEOUT ? "timeout" : "error");
	json_arr_begin(&j, "changes");
	for (size_t i = 0; i < r.count; i++) {
		bool known = before[i].pfn_known && after[i].pfn_known;
		bool pfn_moved = known && before[i].pm.pfn != after[i].pm.pfn;
		bool node_moved = before[i].node != after[i].node;
		moved += pfn_moved;
		renoded += node_moved;
		if (o.summary)
			continue;
		json_obj_begin(&j, NULL);
		json_uint(&j, "i", i);
		if (before[i].pfn_known)
			json_uint(&j, "pfn_before", before[i].pm.pfn);
		else
			json_null(&j, "pfn_before");
		if (after[i].pfn_known)
			json_uint(&j, "pfn_after", after[i].pm.pfn);
		else
			json_null(&j, "pfn_after");
		json_int(&j, "node_before", before[i].node);
		json_int(&j, "node_after", after[i].node);
		if (known)
			json_bool(&j, "pfn_changed", pfn_moved);
		else
			json_null(&j, "pfn_changed");
		json_obj_end(&j);
	}
	json_arr_end(&j);
	json_uint(&j, "pfn_changed_count", moved);
	json_uint(&j, "node_changed_count", renoded);
	if (w != WAIT_OK)
		json_str(&j, "error", w == WAIT_TIMEOUT ? "timed out waiting" : "waiting failed");
	json_obj_end(&j);
	if (json_emit(&j, o.out))
		return 1;
	return w == WAIT_OK ? 0 : 1;
}

static int cmd_move(void)
{
	struct syscall_probe probe = probe_move_phys_pages(seen(OPT_FORCE));
	struct region r;
	struct json j;

	make_region(&r);
	int pm_fd = pagemap_open(0);
	struct page_view *before = view_region(&r, pm_fd);

	struct call c, first, last;
	call_init(&c, o.via_phys, r.count);
	call_init(&first, o.via_phys, r.count);
	call_init(&last, o.via_phys, r.count);
	struct timing t = { .ns = xcalloc((size_t)o.repeat, sizeof(uint64_t)), .n = (size_t)o.repeat };

	for (long rep = 0; rep < o.repeat; rep++) {
		int target = (o.back >= 0 && rep % 2) ? o.back : o.to[0];

		for (size_t i = 0; i < r.count; i++) {
			c.nodes[i] = target;
			if (!o.via_phys) {
				c.addrs[i] = unit_va(&r, i);
				continue;
			}
			if (rep > 0 && seen(OPT_STALE))
				continue;
			/* Translated outside the timed region: a PA is only
			 * good until the page moves, which is the point of
			 * --stale. */
			struct pm_entry e;
			int err = -pagemap_get(pm_fd, unit_va(&r, i), &e);
			/* A page the kernel is migrating (compaction, offlining)
			 * is not present until it lands: touch it, which waits
			 * for the migration, and look again. */
			for (int tries = 0; !err && !e.present && tries < 100; tries++) {
				(void)*(volatile char *)(uintptr_t)unit_va(&r, i);
				err = -pagemap_get(pm_fd, unit_va(&r, i), &e);
			}
			if (err || !e.present || !e.pfn)
				fail(err, "cannot translate page %zu to a physical address (%s); "
					  "run as root, or use 'mpp phys --pa'",
				     i, err ? strerror(err) : !e.present ? "not present" : "PFN hidden");
			c.addrs[i] = e.pfn * PAGE_SIZE_4K + (unit_va(&r, i) % PAGE_SIZE_4K);
		}
		call_run(&c, &probe);
		t.ns[rep] = c.ns;
		t.failed += c.ret != 0;
		if (rep == 0)
			call_copy(&first, &c);
		call_copy(&last, &c);
	}

	struct page_view *after = view_region(&r, pm_fd);
	json_init(&j);
	json_obj_begin(&j, NULL);
	report_head(&j, true);
	json_process(&j);
	json_syscall_info(&j, &probe);
	json_region(&j, &r);
	json_str(&j, "via", o.via_phys ? "phys" : "virt");
	json_bool(&j, "stale", seen(OPT_STALE));
	json_pages(&j, "before", before, r.count);
	json_call(&j, "first_call", &first);
	if (o.repeat > 1)
		json_call(&j, "last_call", &last);
	json_timing(&j, &t);
	json_pages(&j, "after", after, r.count);
	size_t bad = count_mismatches(&r);
	json_bool(&j, "data_ok", bad == 0);
	json_uint(&j, "data_mismatches", bad);
	json_obj_end(&j);
	return json_emit(&j, o.out) ? 1 : 0;
}

static int cmd_phys_or_virt(bool phys)
{
	struct syscall_probe probe = { true, NULL };
	size_t n = phys ? o.npa : o.nva;
	struct call c, first;
	struct json j;
	pid_t pid = (pid_t)o.pid;

	if (phys)
		probe = probe_move_phys_pages(seen(OPT_FORCE));
	call_init(&c, phys, n);
	call_init(&first, phys, n);
	c.pid = pid;
	memcpy(c.addrs, phys ? o.pas : o.vas, n * sizeof(*c.addrs));
	if (seen(OPT_STATUS)) {
		free(c.nodes);
		c.nodes = NULL;
	} else {
		for (size_t i = 0; i < n; i++)
			c.nodes[i] = o.to[o.nto == 1 ? 0 : i];
	}

	json_init(&j);
	json_obj_begin(&j, NULL);
	report_head(&j, true);
	json_process(&j);
	if (phys)
		json_syscall_info(&j, &probe);

	int pm_fd = -1;
	struct page_view *v = NULL;
	if (phys) {
		json_frames(&j, "frames_before", c.addrs, n);
	} else {
		pm_fd = pagemap_open(pid);
		v = xcalloc(n, sizeof(*v));
		view_pages(pid, pm_fd, c.addrs, n, v);
		json_obj_begin(&j, "before");
		json_arr_begin(&j, "pages");
		for (size_t i = 0; i < n; i++)
			json_page_view(&j, &v[i], (long)i);
		json_arr_end(&j);
		json_obj_end(&j);
	}

	struct timing t = { .ns = xcalloc((size_t)o.repeat, sizeof(uint64_t)), .n = (size_t)o.repeat };
	for (long rep = 0; rep < o.repeat; rep++) {
		call_run(&c, &probe);
		t.ns[rep] = c.ns;
		t.failed += c.ret != 0;
		if (rep == 0)
			call_copy(&first, &c);
	}
	json_call(&j, "first_call", &first);
	if (o.repeat > 1)
		json_call(&j, "last_call", &c);
	json_timing(&j, &t);

	if (phys) {
		json_frames(&j, "frames_after", c.addrs, n);
	} else {
		view_pages(pid, pm_fd, c.addrs, n, v);
		json_obj_begin(&j, "after");
		json_arr_begin(&j, "pages");
		for (size_t i = 0; i < n; i++)
			json_page_view(&j, &v[i], (long)i);
		json_arr_end(&j);
		json_obj_end(&j);
		if (pm_fd < 0)
			json_str(&j, "pagemap_error", errno_name(-pm_fd));
	}
	json_obj_end(&j);
	return json_emit(&j, o.out) ? 1 : 0;
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	if (strcmp(o.cmd, "info") == 0)
		return cmd_info();
	if (strcmp(o.cmd, "alloc") == 0)
		return cmd_alloc();
	if (strcmp(o.cmd, "hold") == 0)
		return cmd_hold();
	if (strcmp(o.cmd, "move") == 0 || strcmp(o.cmd, "fork") == 0)
		return cmd_move();
	if (strcmp(o.cmd, "phys") == 0)
		return cmd_phys_or_virt(true);
	return cmd_phys_or_virt(false);
}
