/*
 * cxlrig-mem: count every guest memory access by guest physical address.
 *
 * Accesses are attributed to NUMA nodes (guest-physical ranges), to the
 * member devices of CXL regions (decoded as the interleave decoders do) and
 * to 4 KiB pages, in phases cut from outside over a control socket. The
 * argument syntax and the output format are documented in README.md beside
 * this file, and nowhere else.
 *
 * Threads: the memory callback runs on vCPU threads and writes only the
 * counters of its vCPU slot and the page counters. The page counters are
 * shared, so the plugin is meant for single-threaded TCG (-accel
 * tcg,thread=single), which the orchestrator always uses with a plugin
 * (QEMU 10.0.2 aborts in iotlb_to_section with MTTCG and
 * qemu_plugin_get_hwaddr). A service thread of our own serves the control
 * socket and writes the output: it reads the live counters with relaxed
 * atomic loads, so a 64-bit value is never seen torn, keeps the phase
 * baselines itself, and publishes a new immutable address table when the
 * map grows. The hot path never takes a lock and never looks at phases.
 *
 * SPDX-License-Identifier: GPL-2.0-only
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define PLUGIN_NAME "cxlrig-mem"
#define PLUGIN_VERSION "1.1.0"
/* Bumped whenever a consumer of the JSON would have to change. */
#define OUTPUT_FORMAT 1

#define PAGE_SHIFT 12
#define PAGE_SIZE (UINT64_C(1) << PAGE_SHIFT)
#define MAX_NODE_ID 4095
/* Counter slots are allocated once, so that nodes, regions and devices can
 * be added while vCPUs run (control command "add"). */
#define MAX_NODES 32
#define MAX_REGIONS 64
#define MAX_DEVS 256
#define MAX_NAME 63
#define MAX_LAT_NS 1000000
#define MAX_SAMPLE 1000000000
/* 1 TiB of tracked memory: beyond that the flat page arrays are a mistake. */
#define MAX_PAGES (UINT64_C(1) << 28)
/*
 * Instructions per vCPU between two ticks. A tick advances the clock that
 * stamps pages' "last" access and takes series points; 64 Ki instructions
 * is well under a millisecond of TCG time and the tick costs nothing
 * measurable.
 */
#define TICK_INSNS 65536
/* Delay debts smaller than this are carried, not paid: paying is a spin on
 * the clock, so this only sets how finely the delay is spread over the
 * accesses that owe it (20 us: every 125 accesses owing 160 ns). */
#define DELAY_MIN_NS 20000
#define CONTROL_CLIENTS 4
/* A client's line buffer: the longest command is one byte less (its '\n'). */
#define CONTROL_LINE 4096
#define MAX_WAYS 16
#define MIN_GRAN 256
#define MAX_GRAN 16384
#define MAX_FLUSH_S 86400
#define MAX_CONTROL_PATH (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* ---------------------------------------------------------------------------
 * Configuration: built by qemu_plugin_install; the map (nodes, ranges,
 * regions, devices) grows later only on the service thread ("add")
 */

typedef struct {
    uint64_t n[2]; /* reads, writes */
    uint64_t last; /* instruction clock at the last access */
} Page;

typedef struct {
    uint64_t n[2];
} PageBase;

typedef struct {
    const char *arg;
    uint64_t start, end; /* [start, end) */
    uint32_t node;       /* node slot */
    Page *pages;         /* NULL when pages=off */
    PageBase *base;      /* page counts at the start of the open phase */
} NodeRange;

typedef struct {
    int id;
    const char *lat_arg;
    uint64_t lat[2]; /* read, write ns */
} Node;

typedef struct {
    const char *arg;
    char name[MAX_NAME + 1];
    uint64_t base, size;
    uint32_t ways, gran, gran_shift;
    bool ways_pow2;
    uint32_t dev[MAX_WAYS]; /* device index per interleave position */
} Region;

typedef struct {
    uint64_t start, end;
    int32_t node;     /* node slot or -1 */
    int32_t region;   /* region slot or -1 */
    Page *pages;      /* the page holding `start`, or NULL */
    uint64_t extra[2]; /* delay=on: ns per read/write over the fastest node */
} Segment;

/*
 * The address lookup: segments cut at every range and region boundary, so
 * one search answers "which node" and "which region". Immutable once
 * published; "add" publishes a new one and keeps the old ones until exit,
 * as a vCPU may still be reading them. Tables never shrink (ranges are only
 * added), so a vCPU's cached index stays inside any newer table.
 */
typedef struct {
    size_t n, cap;
    Segment s[];
} Table;

static struct {
    const char *out;
    const char *control;
    uint64_t sample;
    bool pages;
    uint64_t pages_top; /* 0: every touched page */
    uint64_t interval;  /* 0: no series */
    bool interval_ns;
    uint64_t flush_ms;
    bool delay;

    Node nodes[MAX_NODES];
    size_t nnodes;
    NodeRange *ranges;
    size_t nranges;
    Region regions[MAX_REGIONS];
    size_t nregions;
    char devs[MAX_DEVS][MAX_NAME + 1];
    size_t ndevs;
    uint64_t tick_insns;

    int argc;
    char **argv;
} cfg = { .sample = 1, .pages = true, .flush_ms = 5000 };

/* Counters of one vCPU, as (reads, writes) pairs: node slots, region
 * slots, device slots, then the unmatched kinds. */
enum { UNM_RAM, UNM_IO, UNM_UNKNOWN, UNM_KINDS };
static const size_t c_region0 = 2 * MAX_NODES;
static const size_t c_dev0 = 2 * (MAX_NODES + MAX_REGIONS);
static const size_t c_unmatched0 = 2 * (MAX_NODES + MAX_REGIONS + MAX_DEVS);
static const size_t ncounters = 2 * (MAX_NODES + MAX_REGIONS + MAX_DEVS + UNM_KINDS);
static const char *const unm_names[UNM_KINDS] = { "ram", "io", "unknown" };

#define C_NODE(i) (2 * (size_t)(i))
#define C_REGION(i) (c_region0 + 2 * (size_t)(i))
#define C_DEV(i) (c_dev0 + 2 * (size_t)(i))
#define C_UNM(k) (c_unmatched0 + 2 * (size_t)(k))

/* ---------------------------------------------------------------------------
 * Live state
 */

/*
 * One slot per vCPU index. Under single-threaded TCG, QEMU 10.0 passes the
 * index of the vCPU that translated a block rather than the one running it
 * (plugin-gen.c bakes cpu_index in as a constant when blocks are not
 * CF_PARALLEL), so a slot is only a share of the counts; sums are exact.
 */
typedef struct {
    uint32_t last_seg;
    uint32_t countdown;
    uint64_t rng;
    /*
     * Delay: what the model owed for this slot's accesses while the delay
     * was switched on, and what was slept for them. The outstanding debt
     * is always owed_ns - slept_ns (negative after an oversleep), so no
     * nanosecond is lost at a phase cut, a switch or an undershoot.
     */
    uint64_t owed_ns;
    uint64_t slept_ns;
    uint64_t sleeps;
    uint64_t max_over_ns; /* the largest single oversleep */
    uint64_t insns;
    uint64_t since_tick;
    uint64_t c[];
} Vcpu;

static char *vcpu_mem;
static size_t vcpu_stride;
static unsigned int max_vcpus;
static Table *table;
static Table **old_tables;
static size_t nold, old_cap;
/* Map arguments given over the control socket, for the output's record. */
static char **added;
static size_t nadded, added_cap;

/* The instruction clock for page "last" stamps: all vCPUs' instructions,
 * at tick resolution (exact counts are the slots' insns). */
static uint64_t clock_insns;
/* Callbacks with an index beyond max_vcpus (see bad_index in README). */
static uint64_t bad_index;
static struct timespec t0;
/* The run-time switch ("delay on|off"), read by the delay callbacks only. */
static bool delay_on;
static void (*mem_cb)(unsigned int, qemu_plugin_meminfo_t, uint64_t, void *);

static inline Vcpu *vcpu_at(unsigned int i)
{
    return (Vcpu *)(vcpu_mem + (size_t)i * vcpu_stride);
}

/*
 * One writer per counter: a relaxed load and store compile to a plain add
 * on x86-64, yet a concurrent reader never sees half a value.
 */
static inline void bump(uint64_t *p, uint64_t n)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n,
                     __ATOMIC_RELAXED);
}

static inline uint64_t rd(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* A spin-wait's pause: lets a sibling hyperthread run and saves power. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t0.tv_sec) * 1000000000 +
           (t.tv_nsec - t0.tv_nsec);
}

/* ---------------------------------------------------------------------------
 * Phases and series
 *
 * Phases belong to the service thread, and to the exit path once that
 * thread is joined. A phase is the difference between the counters at its
 * two cuts; the hot path never knows phases exist.
 */

typedef struct {
    uint64_t pa, n[2], last;
    uint32_t node;
} PageRec;

/* The delay counters of every slot, summed. */
typedef struct {
    uint64_t owed_ns, slept_ns, sleeps, max_over_ns;
} DelaySum;

typedef struct {
    char *name; /* NULL: the open phase */
    uint64_t start_insns, end_insns;
    int64_t start_ns, end_ns;
    uint64_t *c; /* ncounters raw (unscaled) deltas */
    PageRec *pages;
    size_t npages;
    uint64_t slept_ns, owed_ns;
} Phase;

static Phase *phases;
static size_t nphases;
static uint64_t *open_base;
static DelaySum open_delay_base;
static uint64_t open_start_insns;
static int64_t open_start_ns;
/* Read by the tick to label series points. */
static uint32_t open_index;

static pthread_mutex_t series_lock = PTHREAD_MUTEX_INITIALIZER;
/* Points of (insns, ns, phase, counts of every node slot): a fixed width,
 * as nodes may be added between points. */
static uint64_t *series;
static size_t series_len, series_cap;
static uint64_t series_next; /* next point due, in the interval's unit */

static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t series_width(void)
{
    return 3 + 2 * MAX_NODES;
}

/* ---------------------------------------------------------------------------
 * Argument parsing: strict, every problem named with its argument
 */

static bool fail(const char *arg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Where problems go: stderr at start-up, a control client's reply later. */
static FILE *err_sink;

static bool fail(const char *arg, const char *fmt, ...)
{
    FILE *f = err_sink ? err_sink : stderr;
    va_list ap;

    fprintf(f, PLUGIN_NAME ": ");
    if (arg) {
        fprintf(f, "%s: ", arg);
    }
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    return false;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, PLUGIN_NAME ": out of memory\n");
        abort();
    }
    return p;
}

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return p;
    }
    size_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < need) {
        ncap *= 2;
    }
    p = realloc(p, ncap * size);
    if (!p) {
        fprintf(stderr, PLUGIN_NAME ": out of memory\n");
        abort();
    }
    memset((char *)p + *cap * size, 0, (ncap - *cap) * size);
    *cap = ncap;
    return p;
}

static bool all_digits(const char *s)
{
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
    }
    return true;
}

/* Decimal, or hexadecimal with 0x; nothing else (no sign, no octal, no
 * spaces, no suffix), and no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    unsigned base = 10;
    uint64_t v = 0;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9') {
            d = (unsigned)(*s - '0');
        } else if (base == 16 && *s >= 'a' && *s <= 'f') {
            d = (unsigned)(*s - 'a' + 10);
        } else if (base == 16 && *s >= 'A' && *s <= 'F') {
            d = (unsigned)(*s - 'A' + 10);
        } else {
            return false;
        }
        if (v > (UINT64_MAX - d) / base) {
            return false;
        }
        v = v * base + d;
    }
    *out = v;
    return true;
}

/* Seconds with up to three decimals ("5", "0.5", "0.25") as milliseconds. */
static bool parse_seconds_ms(const char *s, uint64_t *ms)
{
    char whole[16];
    const char *dot = strchr(s, '.');
    size_t wl = dot ? (size_t)(dot - s) : strlen(s);
    uint64_t w, frac = 0;

    if (wl == 0 || wl >= sizeof(whole)) {
        return false;
    }
    memcpy(whole, s, wl);
    whole[wl] = '\0';
    if (!all_digits(whole) || !parse_u64(whole, &w) || w > MAX_FLUSH_S) {
        return false;
    }
    if (dot) {
        const char *f = dot + 1;
        size_t fl = strlen(f);
        if (fl > 3 || !all_digits(f)) {
            return false;
        }
        for (size_t i = 0; i < 3; i++) {
            frac = frac * 10 + (i < fl ? (uint64_t)(f[i] - '0') : 0);
        }
    }
    *ms = w * 1000 + frac;
    return true;
}

static bool parse_onoff(const char *arg, const char *v, bool *out)
{
    if (!strcmp(v, "on")) {
        *out = true;
    } else if (!strcmp(v, "off")) {
        *out = false;
    } else {
        return fail(arg, "expected on or off");
    }
    return true;
}

/* Names end up as JSON keys and socket words: keep them plain. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_NAME) {
        return false;
    }
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
              ch == '.')) {
            return false;
        }
    }
    return true;
}

/* Splits `s` in place at every `sep`; returns the field count, or
 * max + 1 when there are more fields than `max`. */
static size_t split(char *s, char sep, char **fields, size_t max)
{
    size_t n = 0;
    for (;;) {
        if (n == max) {
            return max + 1;
        }
        fields[n++] = s;
        char *p = strchr(s, sep);
        if (!p) {
            return n;
        }
        *p = '\0';
        s = p + 1;
    }
}

static int node_index(int id)
{
    for (size_t i = 0; i < cfg.nnodes; i++) {
        if (cfg.nodes[i].id == id) {
            return (int)i;
        }
    }
    return -1;
}

static size_t ranges_cap;

static bool parse_node_id(const char *arg, const char *s, int *id)
{
    uint64_t v;
    if (!all_digits(s) || !parse_u64(s, &v) || v > MAX_NODE_ID) {
        return fail(arg, "node ID '%s' is not a number from 0 to %d", s,
                    MAX_NODE_ID);
    }
    *id = (int)v;
    return true;
}

static int add_node(const char *arg, int id)
{
    int i = node_index(id);
    if (i >= 0) {
        return i;
    }
    if (cfg.nnodes == MAX_NODES) {
        fail(arg, "more than %d nodes", MAX_NODES);
        return -1;
    }
    memset(&cfg.nodes[cfg.nnodes], 0, sizeof(Node));
    cfg.nodes[cfg.nnodes].id = id;
    return (int)cfg.nnodes++;
}

/* node=ID:START:END */
static bool parse_node(const char *arg, const char *v)
{
    char buf[128], *f[3];
    uint64_t start, end;
    int id;

    if (strlen(v) >= sizeof(buf)) {
        return fail(arg, "too long");
    }
    strcpy(buf, v);
    if (split(buf, ':', f, 3) != 3) {
        return fail(arg, "expected node=ID:START:END");
    }
    if (!parse_node_id(arg, f[0], &id)) {
        return false;
    }
    if (!parse_u64(f[1], &start)) {
        return fail(arg, "START '%s' is not a number", f[1]);
    }
    if (!parse_u64(f[2], &end)) {
        return fail(arg, "END '%s' is not a number", f[2]);
    }
    if (end <= start) {
        return fail(arg, "END must be above START (the range is [START, END))");
    }
    if ((start | end) & (PAGE_SIZE - 1)) {
        return fail(arg, "START and END must be multiples of 4 KiB");
    }
    int n = add_node(arg, id);
    if (n < 0) {
        return false;
    }
    cfg.ranges = grow(cfg.ranges, &ranges_cap, cfg.nranges + 1,
                      sizeof(NodeRange));
    cfg.ranges[cfg.nranges++] = (NodeRange){
        .arg = arg, .start = start, .end = end, .node = (uint32_t)n
    };
    return true;
}

static int add_dev(const char *arg, const char *name)
{
    for (size_t i = 0; i < cfg.ndevs; i++) {
        if (!strcmp(cfg.devs[i], name)) {
            return (int)i;
        }
    }
    if (cfg.ndevs == MAX_DEVS) {
        fail(arg, "more than %d devices", MAX_DEVS);
        return -1;
    }
    strcpy(cfg.devs[cfg.ndevs], name);
    return (int)cfg.ndevs++;
}

/* region=NAME:BASE:SIZE:WAYS:GRAN:DEV0+DEV1+... */
static bool parse_region(const char *arg, const char *v)
{
    char buf[1280], *f[6], *d[MAX_WAYS + 1];
    Region r = { .arg = arg };
    uint64_t ways, gran;
    size_t nd;

    if (strlen(v) >= sizeof(buf)) {
        return fail(arg, "too long");
    }
    strcpy(buf, v);
    if (split(buf, ':', f, 6) != 6) {
        return fail(arg, "expected region=NAME:BASE:SIZE:WAYS:GRAN:DEV0+DEV1+...");
    }
    if (!valid_name(f[0])) {
        return fail(arg, "NAME '%s' must be 1 to %d letters, digits, '_', '-' or '.'",
                    f[0], MAX_NAME);
    }
    strcpy(r.name, f[0]);
    if (!parse_u64(f[1], &r.base)) {
        return fail(arg, "BASE '%s' is not a number", f[1]);
    }
    if (!parse_u64(f[2], &r.size) || r.size == 0) {
        return fail(arg, "SIZE '%s' is not a positive number", f[2]);
    }
    if (r.base > UINT64_MAX - r.size) {
        return fail(arg, "BASE + SIZE overflows");
    }
    if (!parse_u64(f[3], &ways) ||
        !(ways == 1 || ways == 2 || ways == 3 || ways == 4 || ways == 6 ||
          ways == 8 || ways == 12 || ways == 16)) {
        return fail(arg, "WAYS '%s' is not one of 1, 2, 3, 4, 6, 8, 12, 16", f[3]);
    }
    if (!parse_u64(f[4], &gran) || gran < MIN_GRAN || gran > MAX_GRAN ||
        (gran & (gran - 1))) {
        return fail(arg, "GRAN '%s' is not a power of two from %d to %d", f[4], MIN_GRAN,
                    MAX_GRAN);
    }
    r.ways = (uint32_t)ways;
    r.gran = (uint32_t)gran;
    r.gran_shift = (uint32_t)__builtin_ctzll(gran);
    r.ways_pow2 = !(ways & (ways - 1));
    if ((r.base | r.size) & (PAGE_SIZE - 1)) {
        return fail(arg, "BASE and SIZE must be multiples of 4 KiB");
    }
    if (r.size % (gran * ways)) {
        return fail(arg, "SIZE must be a multiple of GRAN * WAYS");
    }
    nd = split(f[5], '+', d, MAX_WAYS);
    if (nd != ways) {
        return fail(arg, "%zu device names for %" PRIu64 " ways",
                    nd > MAX_WAYS ? (size_t)MAX_WAYS + 1 : nd, ways);
    }
    for (size_t i = 0; i < nd; i++) {
        if (!valid_name(d[i])) {
            return fail(arg, "device name '%s' must be 1 to %d letters, digits, '_', '-' or '.'",
                        d[i], MAX_NAME);
        }
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(d[i], d[j])) {
                return fail(arg, "device '%s' appears twice", d[i]);
            }
        }
        int dev = add_dev(arg, d[i]);
        if (dev < 0) {
            return false;
        }
        r.dev[i] = (uint32_t)dev;
    }
    for (size_t i = 0; i < cfg.nregions; i++) {
        if (!strcmp(cfg.regions[i].name, r.name)) {
            return fail(arg, "region name '%s' also used by %s", r.name,
                        cfg.regions[i].arg);
        }
    }
    if (cfg.nregions == MAX_REGIONS) {
        return fail(arg, "more than %d regions", MAX_REGIONS);
    }
    cfg.regions[cfg.nregions++] = r;
    return true;
}

typedef struct {
    const char *arg;
    int id;
    uint64_t r, w;
} LatArg;

static LatArg *lats;
static size_t nlats, lats_cap;

/* lat=ID:READ_NS:WRITE_NS */
static bool parse_lat(const char *arg, const char *v)
{
    char buf[96], *f[3];
    LatArg l = { .arg = arg };

    if (strlen(v) >= sizeof(buf)) {
        return fail(arg, "too long");
    }
    strcpy(buf, v);
    if (split(buf, ':', f, 3) != 3) {
        return fail(arg, "expected lat=ID:READ_NS:WRITE_NS");
    }
    if (!parse_node_id(arg, f[0], &l.id)) {
        return false;
    }
    if (!all_digits(f[1]) || !parse_u64(f[1], &l.r) || l.r > MAX_LAT_NS) {
        return fail(arg, "READ_NS '%s' is not a number from 0 to %d", f[1], MAX_LAT_NS);
    }
    if (!all_digits(f[2]) || !parse_u64(f[2], &l.w) || l.w > MAX_LAT_NS) {
        return fail(arg, "WRITE_NS '%s' is not a number from 0 to %d", f[2], MAX_LAT_NS);
    }
    lats = grow(lats, &lats_cap, nlats + 1, sizeof(LatArg));
    lats[nlats++] = l;
    return true;
}

/* Latencies name nodes, which may come later on the command line. */
static bool apply_lats(size_t from)
{
    bool ok = true;
    for (size_t i = from; i < nlats; i++) {
        int n = node_index(lats[i].id);
        if (n < 0) {
            ok = fail(lats[i].arg, "node %d has no node= range", lats[i].id);
            continue;
        }
        if (cfg.nodes[n].lat_arg) {
            ok = fail(lats[i].arg, "node %d already has %s", lats[i].id,
                      cfg.nodes[n].lat_arg);
            continue;
        }
        cfg.nodes[n].lat_arg = lats[i].arg;
        cfg.nodes[n].lat[0] = lats[i].r;
        cfg.nodes[n].lat[1] = lats[i].w;
    }
    return ok;
}

static bool once(const char *arg, const char *key, bool *seen)
{
    if (*seen) {
        return fail(arg, "%s= given twice", key);
    }
    *seen = true;
    return true;
}

static bool parse_args(int argc, char **argv)
{
    bool ok = true;
    bool seen_out = false, seen_control = false, seen_sample = false,
         seen_pages = false, seen_top = false, seen_interval = false,
         seen_unit = false, seen_flush = false, seen_delay = false;

    /* Report every bad argument, not only the first. */
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq = strchr(arg, '=');
        char key[32];
        size_t kl;
        const char *v;

        if (!eq) {
            ok = fail(arg, "expected key=value");
            continue;
        }
        kl = (size_t)(eq - arg);
        if (kl == 0 || kl >= sizeof(key)) {
            ok = fail(arg, "unknown key");
            continue;
        }
        memcpy(key, arg, kl);
        key[kl] = '\0';
        v = eq + 1;

        if (!strcmp(key, "node")) {
            ok &= parse_node(arg, v);
        } else if (!strcmp(key, "region")) {
            ok &= parse_region(arg, v);
        } else if (!strcmp(key, "lat")) {
            ok &= parse_lat(arg, v);
        } else if (!strcmp(key, "out")) {
            if (!once(arg, key, &seen_out)) {
                ok = false;
            } else if (!*v) {
                ok = fail(arg, "empty path");
            }
            cfg.out = v;
        } else if (!strcmp(key, "control")) {
            if (!once(arg, key, &seen_control)) {
                ok = false;
            } else if (!*v || strlen(v) > MAX_CONTROL_PATH) {
                ok = fail(arg, "the socket path must be 1 to %zu bytes", MAX_CONTROL_PATH);
            }
            cfg.control = v;
        } else if (!strcmp(key, "sample")) {
            if (!once(arg, key, &seen_sample)) {
                ok = false;
            } else if (!parse_u64(v, &cfg.sample) || cfg.sample < 1 ||
                       cfg.sample > MAX_SAMPLE) {
                ok = fail(arg, "expected a number from 1 to %d", MAX_SAMPLE);
            }
        } else if (!strcmp(key, "pages")) {
            ok &= once(arg, key, &seen_pages) && parse_onoff(arg, v, &cfg.pages);
        } else if (!strcmp(key, "pages_top")) {
            if (!once(arg, key, &seen_top)) {
                ok = false;
            } else if (!parse_u64(v, &cfg.pages_top)) {
                ok = fail(arg, "expected a number (0: every touched page)");
            }
        } else if (!strcmp(key, "interval")) {
            if (!once(arg, key, &seen_interval)) {
                ok = false;
            } else if (!parse_u64(v, &cfg.interval) || cfg.interval == 0) {
                ok = fail(arg, "expected a positive number");
            }
        } else if (!strcmp(key, "interval_unit")) {
            if (!once(arg, key, &seen_unit)) {
                ok = false;
            } else if (!strcmp(v, "ns")) {
                cfg.interval_ns = true;
            } else if (strcmp(v, "insn")) {
                ok = fail(arg, "expected insn or ns");
            }
        } else if (!strcmp(key, "flush")) {
            if (!once(arg, key, &seen_flush)) {
                ok = false;
            } else if (!parse_seconds_ms(v, &cfg.flush_ms)) {
                ok = fail(arg, "expected seconds (0 to %d, up to 3 decimals; 0: off)",
                          MAX_FLUSH_S);
            }
        } else if (!strcmp(key, "delay")) {
            ok &= once(arg, key, &seen_delay) && parse_onoff(arg, v, &cfg.delay);
        } else {
            ok = fail(arg, "unknown key '%s' (known: out, node, region, lat, pages, "
                      "pages_top, sample, interval, interval_unit, flush, control, delay)",
                      key);
        }
    }

    if (!seen_out) {
        ok = fail(NULL, "out=PATH is required");
    }
    if (seen_unit && !seen_interval) {
        ok = fail(NULL, "interval_unit= needs interval=");
    }
    ok &= apply_lats(0);
    /*
     * A map given at start without any latency can only be a mistake with
     * delay=on. With no node= at all the whole map, latencies included,
     * comes later with "add" (e.g. into a machine started paused).
     */
    if (cfg.delay && nlats == 0 && cfg.nranges > 0) {
        ok = fail(NULL, "delay=on needs at least one lat= when node= ranges are given "
                  "(or no node= at all, to add the map over the control socket)");
    }
    return ok;
}

/* ---------------------------------------------------------------------------
 * Building the lookup structures
 */

static int cmp_range_ptr(const void *a, const void *b)
{
    const NodeRange *x = *(NodeRange *const *)a, *y = *(NodeRange *const *)b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int cmp_region_ptr(const void *a, const void *b)
{
    const Region *x = *(Region *const *)a, *y = *(Region *const *)b;
    return x->base < y->base ? -1 : x->base > y->base;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Overlaps and sizes, without changing anything (so "add" can roll back). */
static bool validate_map(void)
{
    bool ok = true;
    uint64_t pages = 0;
    NodeRange **r = xcalloc(cfg.nranges, sizeof(*r));
    Region **g = xcalloc(cfg.nregions, sizeof(*g));

    for (size_t i = 0; i < cfg.nranges; i++) {
        r[i] = &cfg.ranges[i];
        pages += (r[i]->end - r[i]->start) >> PAGE_SHIFT;
    }
    qsort(r, cfg.nranges, sizeof(*r), cmp_range_ptr);
    for (size_t i = 1; i < cfg.nranges; i++) {
        /* Sorted by start with no overlap so far: the previous range has
         * the furthest end. */
        if (r[i]->start < r[i - 1]->end) {
            ok = fail(r[i]->arg, "overlaps %s", r[i - 1]->arg);
        }
    }
    for (size_t i = 0; i < cfg.nregions; i++) {
        g[i] = &cfg.regions[i];
    }
    qsort(g, cfg.nregions, sizeof(*g), cmp_region_ptr);
    for (size_t i = 1; i < cfg.nregions; i++) {
        if (g[i]->base < g[i - 1]->base + g[i - 1]->size) {
            ok = fail(g[i]->arg, "overlaps %s", g[i - 1]->arg);
        }
    }
    if (ok && cfg.pages && pages > MAX_PAGES) {
        ok = fail(NULL, "more than 1 TiB of node ranges with pages=on");
    }
    free(r);
    free(g);
    return ok;
}

/* Page arrays for new ranges, then a new lookup table, then publish it. */
static void publish_map(void)
{
    uint64_t extra[MAX_NODES][2] = { { 0 } };
    size_t nb = 0, n = 0, cap;
    uint64_t *b;
    Table *t;

    for (size_t i = 0; cfg.pages && i < cfg.nranges; i++) {
        NodeRange *r = &cfg.ranges[i];
        if (!r->pages) {
            /* calloc of this size maps zero pages lazily: untouched guest
             * memory costs address space, not host memory. */
            r->pages = xcalloc((r->end - r->start) >> PAGE_SHIFT, sizeof(Page));
            r->base = xcalloc((r->end - r->start) >> PAGE_SHIFT, sizeof(PageBase));
        }
    }
    if (cfg.delay) {
        /* Only the slowdown relative to the fastest modelled node is
         * injected: TCG is already slow for every access alike. */
        uint64_t min[2] = { UINT64_MAX, UINT64_MAX };
        for (size_t i = 0; i < cfg.nnodes; i++) {
            for (int w = 0; w < 2; w++) {
                if (cfg.nodes[i].lat_arg && cfg.nodes[i].lat[w] < min[w]) {
                    min[w] = cfg.nodes[i].lat[w];
                }
            }
        }
        for (size_t i = 0; i < cfg.nnodes; i++) {
            for (int w = 0; w < 2; w++) {
                if (cfg.nodes[i].lat_arg) {
                    /* Sampled mode: one counted access stands for N. */
                    extra[i][w] = (cfg.nodes[i].lat[w] - min[w]) * cfg.sample;
                }
            }
        }
    }

    b = xcalloc(2 * (cfg.nranges + cfg.nregions), sizeof(uint64_t));
    for (size_t i = 0; i < cfg.nranges; i++) {
        b[nb++] = cfg.ranges[i].start;
        b[nb++] = cfg.ranges[i].end;
    }
    for (size_t i = 0; i < cfg.nregions; i++) {
        b[nb++] = cfg.regions[i].base;
        b[nb++] = cfg.regions[i].base + cfg.regions[i].size;
    }
    qsort(b, nb, sizeof(uint64_t), cmp_u64);
    /* At least one entry (an empty segment) for the vCPUs' cached index. */
    cap = nb > 1 ? nb : 1;
    if (table && table->cap > cap) {
        cap = table->cap;
    }
    t = xcalloc(1, sizeof(Table) + cap * sizeof(Segment));
    t->cap = cap;
    for (size_t i = 0; i + 1 < nb; i++) {
        uint64_t lo = b[i], hi = b[i + 1];
        Segment seg = { .start = lo, .end = hi, .node = -1, .region = -1 };
        if (lo == hi) {
            continue;
        }
        for (size_t j = 0; j < cfg.nranges; j++) {
            const NodeRange *r = &cfg.ranges[j];
            if (r->start <= lo && hi <= r->end) {
                seg.node = (int32_t)r->node;
                seg.pages = r->pages ? r->pages + ((lo - r->start) >> PAGE_SHIFT) : NULL;
                seg.extra[0] = extra[r->node][0];
                seg.extra[1] = extra[r->node][1];
            }
        }
        for (size_t j = 0; j < cfg.nregions; j++) {
            const Region *r = &cfg.regions[j];
            if (r->base <= lo && hi <= r->base + r->size) {
                seg.region = (int32_t)j;
            }
        }
        if (seg.node >= 0 || seg.region >= 0) {
            t->s[n++] = seg;
        }
    }
    t->n = n;
    free(b);
    if (table) {
        old_tables = grow(old_tables, &old_cap, nold + 1, sizeof(Table *));
        old_tables[nold++] = table;
    }
    /* Release: a vCPU that sees the new table sees its segments, regions
     * and pages filled in. */
    __atomic_store_n(&table, t, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------------------
 * The hot path
 */

static inline int32_t find_segment(const Table *t, uint64_t pa)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (t->s[mid].start <= pa) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0 || pa >= t->s[lo - 1].end) {
        return -1;
    }
    return (int32_t)(lo - 1);
}

/*
 * Sampled mode's gaps, drawn at random from 1 .. 2N - 1 (mean N) by
 * xorshift64, scaled with a multiply and a shift rather than a division.
 * Random gaps keep loops whose period shares a factor with N from being
 * seen at the same positions. They cost a mispredicted branch per sampled
 * access; fixed gaps restarted at random every 64 samples were 0.6 s faster
 * on an 8000 MB dd (1.96 s against 2.58 s), but a hot set's stores (one
 * access in four) came out 8% low on a 16384-sample phase: the restarts,
 * not the samples, are what count then.
 */
static inline uint32_t next_gap(Vcpu *v)
{
    uint64_t x = v->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v->rng = x;
    return 1 + (uint32_t)(((x >> 32) * (2 * cfg.sample - 1)) >> 32);
}

/* The slot of a callback's vCPU, or NULL. QEMU 10.0.2 corrupts the index
 * when any plugin in the process uses inline ops under single-threaded TCG
 * (it multiplies a shared constant in place): count, never index out of
 * bounds. */
static inline Vcpu *slot(unsigned int vcpu_index)
{
    if (__builtin_expect(vcpu_index >= max_vcpus, 0)) {
        __atomic_add_fetch(&bad_index, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    return vcpu_at(vcpu_index);
}

static void pay_delay(Vcpu *v);

/*
 * A delayed access: owe its extra time, and pay at once when the debt
 * reaches DELAY_MIN_NS. Paying here rather than at the next tick keeps the
 * outstanding debt under one threshold (plus one access's extra) at every
 * instant, so a phase cut can never leave a tick's worth of debt behind.
 */
static inline void owe(Vcpu *v, uint64_t ns)
{
    uint64_t owed = rd(&v->owed_ns) + ns;

    __atomic_store_n(&v->owed_ns, owed, __ATOMIC_RELAXED);
    if (__builtin_expect((int64_t)(owed - rd(&v->slept_ns)) >= DELAY_MIN_NS, 0)) {
        pay_delay(v);
    }
}

/* One access, attributed by its physical address. */
static inline __attribute__((always_inline)) void
account(Vcpu *v, qemu_plugin_meminfo_t info, uint64_t vaddr, const bool delay)
{
    struct qemu_plugin_hwaddr *hw;
    const Segment *s;
    const Table *t;
    unsigned w;
    uint64_t pa;

    w = qemu_plugin_mem_is_store(info);
    hw = qemu_plugin_get_hwaddr(info, vaddr);
    if (__builtin_expect(!hw, 0)) {
        bump(&v->c[C_UNM(UNM_UNKNOWN) + w], 1);
        return;
    }
    pa = qemu_plugin_hwaddr_phys_addr(hw);
    t = __atomic_load_n(&table, __ATOMIC_ACQUIRE);
    s = &t->s[v->last_seg];
    /* Unsigned wrap makes this one compare for "outside [start, end)". */
    if (pa - s->start >= s->end - s->start) {
        int32_t i = find_segment(t, pa);
        if (i < 0) {
            bump(&v->c[C_UNM(qemu_plugin_hwaddr_is_io(hw) ? UNM_IO : UNM_RAM) + w], 1);
            return;
        }
        v->last_seg = (uint32_t)i;
        s = &t->s[i];
    }
    if (s->node >= 0) {
        bump(&v->c[C_NODE(s->node) + w], 1);
        if (s->pages) {
            Page *p = s->pages + ((pa - s->start) >> PAGE_SHIFT);
            bump(&p->n[w], 1);
            __atomic_store_n(&p->last, rd(&clock_insns), __ATOMIC_RELAXED);
        }
        if (delay && __atomic_load_n(&delay_on, __ATOMIC_RELAXED)) {
            owe(v, s->extra[w]);
        }
    } else {
        bump(&v->c[C_UNM(qemu_plugin_hwaddr_is_io(hw) ? UNM_IO : UNM_RAM) + w], 1);
    }
    if (s->region >= 0) {
        const Region *r = &cfg.regions[s->region];
        /* The interleave position, computed on the absolute address as
         * QEMU's window and HDM decoders do; for 3, 6 and 12 ways this is
         * the CXL modulo arithmetic. */
        uint64_t chunk = pa >> r->gran_shift;
        uint32_t pos = r->ways_pow2 ? (uint32_t)(chunk & (r->ways - 1))
                                    : (uint32_t)(chunk % r->ways);
        bump(&v->c[C_REGION(s->region) + w], 1);
        bump(&v->c[C_DEV(r->dev[pos]) + w], 1);
    }
}

/*
 * The four variants let the compiler drop what is off. In sampled mode the
 * access that is skipped must cost next to nothing: the skip is a leaf that
 * touches one counter, and the sampled access goes to an out-of-line copy,
 * so the fast path saves no registers.
 */
static __attribute__((noinline)) void account_plain(Vcpu *v, qemu_plugin_meminfo_t i,
                                                    uint64_t va)
{
    account(v, i, va, false);
}

static __attribute__((noinline)) void account_delay(Vcpu *v, qemu_plugin_meminfo_t i,
                                                    uint64_t va)
{
    account(v, i, va, true);
}

static inline __attribute__((always_inline)) void
exact(unsigned int c, qemu_plugin_meminfo_t i, uint64_t va, const bool delay)
{
    Vcpu *v = slot(c);

    if (v) {
        account(v, i, va, delay);
    }
}

static inline __attribute__((always_inline)) void
sampled(unsigned int c, qemu_plugin_meminfo_t i, uint64_t va, const bool delay)
{
    Vcpu *v = slot(c);

    if (!v || --v->countdown) {
        return;
    }
    v->countdown = next_gap(v);
    (delay ? account_delay : account_plain)(v, i, va);
}

static void mem_exact(unsigned int c, qemu_plugin_meminfo_t i, uint64_t va, void *u)
{
    (void)u;
    exact(c, i, va, false);
}

static void mem_exact_delay(unsigned int c, qemu_plugin_meminfo_t i, uint64_t va, void *u)
{
    (void)u;
    exact(c, i, va, true);
}

static void mem_sampled(unsigned int c, qemu_plugin_meminfo_t i, uint64_t va, void *u)
{
    (void)u;
    sampled(c, i, va, false);
}

static void mem_sampled_delay(unsigned int c, qemu_plugin_meminfo_t i, uint64_t va,
                              void *u)
{
    (void)u;
    sampled(c, i, va, true);
}

/* ---------------------------------------------------------------------------
 * Ticks: the clock, series points, delay
 */

static void series_point(uint64_t insns, int64_t ns)
{
    size_t wd = series_width();
    series = grow(series, &series_cap, (series_len + 1) * wd, sizeof(uint64_t));
    uint64_t *p = series + series_len * wd;
    p[0] = insns;
    p[1] = (uint64_t)ns;
    p[2] = __atomic_load_n(&open_index, __ATOMIC_RELAXED);
    for (size_t k = 0; k < 2 * MAX_NODES; k++) {
        uint64_t t = 0;
        for (unsigned int c = 0; c < max_vcpus; c++) {
            t += rd(&vcpu_at(c)->c[k]);
        }
        p[3 + k] = t;
    }
    __atomic_store_n(&series_len, series_len + 1, __ATOMIC_RELEASE);
}

static void series_tick(uint64_t insns)
{
    int64_t ns = now_ns();
    uint64_t t = cfg.interval_ns ? (uint64_t)ns : insns;

    if (t < __atomic_load_n(&series_next, __ATOMIC_RELAXED)) {
        return;
    }
    pthread_mutex_lock(&series_lock);
    if (t >= series_next) {
        series_point(insns, ns);
        __atomic_store_n(&series_next, (t / cfg.interval + 1) * cfg.interval,
                         __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&series_lock);
}

/*
 * Pay the slot's debt by spinning on the clock; what counts is what the
 * clock says was spent. Not nanosleep: measured in a guest (bench/delay.py),
 * sleeping 200 us at a time made each CXL load 50-60% slower than the model
 * on top of the time slept (the vCPU thread runs slow for a while after each
 * wake-up), spinning kept it within about 10%. A stall in the thread that
 * runs the vCPU is also what a slow memory is to a real CPU: it holds the
 * core. An overrun (the thread was preempted while spinning) leaves the
 * debt negative, and the next accesses repay it without waiting. Whichever vCPU runs a block pays the debt of the slot
 * it counts in (see Vcpu): under single-threaded TCG one host thread runs
 * every vCPU, so the guest as a whole waits either way.
 */
static __attribute__((noinline, cold)) void pay_delay(Vcpu *v)
{
    int64_t debt;

    while ((debt = (int64_t)(rd(&v->owed_ns) - rd(&v->slept_ns))) >= DELAY_MIN_NS) {
        int64_t start = now_ns(), slept;

        while ((slept = now_ns() - start) < debt) {
            cpu_relax();
        }
        if (slept > debt && (uint64_t)(slept - debt) > rd(&v->max_over_ns)) {
            __atomic_store_n(&v->max_over_ns, (uint64_t)(slept - debt), __ATOMIC_RELAXED);
        }
        bump(&v->sleeps, 1);
        bump(&v->slept_ns, slept > 0 ? (uint64_t)slept : 0);
    }
}

/* Out of line: the block callback that does not tick saves no registers. */
static __attribute__((noinline)) void tick(Vcpu *v)
{
    uint64_t now = __atomic_add_fetch(&clock_insns, v->since_tick, __ATOMIC_RELAXED);

    v->since_tick = 0;
    if (cfg.interval) {
        series_tick(now);
    }
}

/*
 * Instructions are counted by a plain callback per block, not an inline
 * op: QEMU 10.0.2's inline ops break the vCPU index of every later callback
 * in the block under single-threaded TCG (see account()).
 */
static void tb_exec(unsigned int vcpu_index, void *udata)
{
    uint64_t n = (uintptr_t)udata;
    Vcpu *v = slot(vcpu_index);

    if (!v) {
        return;
    }
    bump(&v->insns, n);
    v->since_tick += n;
    if (v->since_tick >= cfg.tick_insns) {
        tick(v);
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);

    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)n);
    for (size_t i = 0; i < n; i++) {
        qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), mem_cb,
                                         QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, NULL);
    }
}

/* ---------------------------------------------------------------------------
 * Cutting phases (service thread, or the exit path after it is joined)
 */

/*
 * While vCPUs run, a slot's owed and slept are read a moment apart, like
 * every other pair of counters in a cut (README: stop the VM for a sharp
 * one); a stopped vCPU is never inside pay_delay.
 */
static void sum_counters(uint64_t *tot, DelaySum *d)
{
    memset(tot, 0, ncounters * sizeof(uint64_t));
    memset(d, 0, sizeof(*d));
    for (unsigned int c = 0; c < max_vcpus; c++) {
        Vcpu *v = vcpu_at(c);
        uint64_t over = rd(&v->max_over_ns);
        d->owed_ns += rd(&v->owed_ns);
        d->slept_ns += rd(&v->slept_ns);
        d->sleeps += rd(&v->sleeps);
        d->max_over_ns = over > d->max_over_ns ? over : d->max_over_ns;
        for (size_t k = 0; k < ncounters; k++) {
            tot[k] += rd(&v->c[k]);
        }
    }
}

/* Every instruction run so far, exact (unlike the tick-resolution clock). */
static uint64_t read_clock(void)
{
    uint64_t t = 0;
    for (unsigned int c = 0; c < max_vcpus; c++) {
        t += rd(&vcpu_at(c)->insns);
    }
    return t;
}

static int cmp_pagerec(const void *a, const void *b)
{
    const PageRec *x = a, *y = b;
    uint64_t tx = x->n[0] + x->n[1], ty = y->n[0] + y->n[1];
    if (tx != ty) {
        return tx > ty ? -1 : 1;
    }
    return x->pa < y->pa ? -1 : x->pa > y->pa;
}

/*
 * The open phase as of now. With `advance`, also start the next phase
 * here: every counter's baseline becomes the value read for this phase, so
 * each access lands in exactly one phase even while vCPUs keep running.
 */
static void cut(Phase *ph, bool advance)
{
    uint64_t *tot = xcalloc(ncounters, sizeof(uint64_t));
    DelaySum d;
    size_t cap = 0;

    memset(ph, 0, sizeof(*ph));
    ph->end_insns = read_clock();
    ph->end_ns = now_ns();
    sum_counters(tot, &d);
    ph->start_insns = open_start_insns;
    ph->start_ns = open_start_ns;
    ph->slept_ns = d.slept_ns - open_delay_base.slept_ns;
    ph->owed_ns = d.owed_ns - open_delay_base.owed_ns;
    ph->c = xcalloc(ncounters, sizeof(uint64_t));
    for (size_t k = 0; k < ncounters; k++) {
        ph->c[k] = tot[k] - open_base[k];
    }
    for (size_t i = 0; cfg.pages && i < cfg.nranges; i++) {
        const NodeRange *r = &cfg.ranges[i];
        uint64_t n = (r->end - r->start) >> PAGE_SHIFT;
        for (uint64_t j = 0; j < n; j++) {
            Page *p = &r->pages[j];
            PageBase *b = &r->base[j];
            uint64_t cur[2] = { rd(&p->n[0]), rd(&p->n[1]) };
            if (cur[0] == b->n[0] && cur[1] == b->n[1]) {
                continue;
            }
            if (ph->npages == cap) {
                ph->pages = grow(ph->pages, &cap, cap + 1, sizeof(PageRec));
            }
            ph->pages[ph->npages++] = (PageRec){
                .pa = r->start + (j << PAGE_SHIFT),
                .n = { cur[0] - b->n[0], cur[1] - b->n[1] },
                .last = rd(&p->last),
                .node = r->node,
            };
            if (advance) {
                b->n[0] = cur[0];
                b->n[1] = cur[1];
            }
        }
    }
    qsort(ph->pages, ph->npages, sizeof(PageRec), cmp_pagerec);
    if (advance) {
        memcpy(open_base, tot, ncounters * sizeof(uint64_t));
        open_delay_base = d;
        open_start_insns = ph->end_insns;
        open_start_ns = ph->end_ns;
    }
    free(tot);
}

static void free_phase(Phase *ph)
{
    free(ph->name);
    free(ph->c);
    free(ph->pages);
}

static size_t phases_cap;

static void snapshot(const char *name)
{
    Phase ph;
    cut(&ph, true);
    ph.name = strdup(name);
    phases = grow(phases, &phases_cap, nphases + 1, sizeof(Phase));
    phases[nphases++] = ph;
    __atomic_store_n(&open_index, (uint32_t)nphases, __ATOMIC_RELAXED);
}

static void reset(void)
{
    Phase ph;
    cut(&ph, true);
    free_phase(&ph);
}

/* ---------------------------------------------------------------------------
 * Output
 */

/* Node slots in ID order: slots are numbered as nodes appeared. */
static size_t node_order(size_t *order)
{
    for (size_t i = 0; i < cfg.nnodes; i++) {
        size_t j = i;
        while (j > 0 && cfg.nodes[order[j - 1]].id > cfg.nodes[i].id) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    return cfg.nnodes;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            fputc('\\', f);
            fputc(ch, f);
        } else if (ch < 0x20) {
            fprintf(f, "\\u%04x", ch);
        } else {
            fputc(ch, f);
        }
    }
    fputc('"', f);
}

static void json_rw(FILE *f, const uint64_t *c)
{
    fprintf(f, "{\"reads\": %" PRIu64 ", \"writes\": %" PRIu64 "}",
            c[0] * cfg.sample, c[1] * cfg.sample);
}

/* The counters of a phase (or of the whole run), without pages. */
static void json_counts(FILE *f, const uint64_t *c, const char *ind)
{
    size_t order[MAX_NODES], nn = node_order(order);

    fprintf(f, "%s\"nodes\": {", ind);
    for (size_t k = 0; k < nn; k++) {
        size_t i = order[k];
        const Node *n = &cfg.nodes[i];
        uint64_t r = c[C_NODE(i)] * cfg.sample, w = c[C_NODE(i) + 1] * cfg.sample;
        fprintf(f, "%s\"%d\": {\"reads\": %" PRIu64 ", \"writes\": %" PRIu64
                ", \"modelled_ns\": ", k ? ", " : "", n->id, r, w);
        if (n->lat_arg) {
            fprintf(f, "%" PRIu64 "}", r * n->lat[0] + w * n->lat[1]);
        } else {
            fputs("null}", f);
        }
    }
    fprintf(f, "},\n%s\"regions\": {", ind);
    for (size_t i = 0; i < cfg.nregions; i++) {
        fprintf(f, "%s\"%s\": ", i ? ", " : "", cfg.regions[i].name);
        json_rw(f, &c[C_REGION(i)]);
    }
    fprintf(f, "},\n%s\"devices\": {", ind);
    for (size_t i = 0; i < cfg.ndevs; i++) {
        fprintf(f, "%s\"%s\": ", i ? ", " : "", cfg.devs[i]);
        json_rw(f, &c[C_DEV(i)]);
    }
    fprintf(f, "},\n%s\"unmatched\": {", ind);
    for (int k = 0; k < UNM_KINDS; k++) {
        fprintf(f, "%s\"%s\": ", k ? ", " : "", unm_names[k]);
        json_rw(f, &c[C_UNM(k)]);
    }
    fputs("}", f);
}

static void json_phase(FILE *f, const Phase *ph, size_t index)
{
    size_t shown = ph->npages;

    if (cfg.pages_top && shown > cfg.pages_top) {
        shown = cfg.pages_top;
    }
    fputs("    {\"name\": ", f);
    if (ph->name) {
        json_str(f, ph->name);
    } else {
        fputs("null", f);
    }
    fprintf(f, ", \"index\": %zu,\n", index);
    fprintf(f, "     \"start\": {\"insns\": %" PRIu64 ", \"ns\": %" PRId64 "}, "
            "\"end\": {\"insns\": %" PRIu64 ", \"ns\": %" PRId64 "}, "
            "\"insns\": %" PRIu64 ", \"delay_ns\": %" PRIu64 ", \"delay_owed_ns\": %" PRIu64
            ",\n", ph->start_insns, ph->start_ns, ph->end_insns, ph->end_ns,
            ph->end_insns - ph->start_insns, ph->slept_ns, ph->owed_ns);
    json_counts(f, ph->c, "     ");
    fprintf(f, ",\n     \"pages_touched\": %zu, \"pages\": [", ph->npages);
    for (size_t i = 0; i < shown; i++) {
        const PageRec *p = &ph->pages[i];
        fprintf(f, "%s\n      {\"pa\": %" PRIu64 ", \"node\": %d, \"reads\": %" PRIu64
                ", \"writes\": %" PRIu64 ", \"last\": %" PRIu64 "}",
                i ? "," : "", p->pa, cfg.nodes[p->node].id, p->n[0] * cfg.sample,
                p->n[1] * cfg.sample, p->last);
    }
    fputs(shown ? "\n     ]}" : "]}", f);
}

static void json_config(FILE *f)
{
    size_t order[MAX_NODES], nn = node_order(order);

    fputs("  \"nodes\": [", f);
    for (size_t k = 0; k < nn; k++) {
        size_t i = order[k];
        const Node *n = &cfg.nodes[i];
        bool first = true;
        fprintf(f, "%s\n    {\"id\": %d, \"ranges\": [", k ? "," : "", n->id);
        for (size_t j = 0; j < cfg.nranges; j++) {
            if (cfg.ranges[j].node == i) {
                fprintf(f, "%s[%" PRIu64 ", %" PRIu64 "]", first ? "" : ", ",
                        cfg.ranges[j].start, cfg.ranges[j].end);
                first = false;
            }
        }
        if (n->lat_arg) {
            fprintf(f, "], \"read_ns\": %" PRIu64 ", \"write_ns\": %" PRIu64 "}",
                    n->lat[0], n->lat[1]);
        } else {
            fputs("], \"read_ns\": null, \"write_ns\": null}", f);
        }
    }
    fputs(cfg.nnodes ? "\n  ],\n" : "],\n", f);
    fputs("  \"regions\": [", f);
    for (size_t i = 0; i < cfg.nregions; i++) {
        const Region *r = &cfg.regions[i];
        fprintf(f, "%s\n    {\"name\": \"%s\", \"base\": %" PRIu64 ", \"size\": %" PRIu64
                ", \"ways\": %u, \"granularity\": %u, \"devices\": [",
                i ? "," : "", r->name, r->base, r->size, r->ways, r->gran);
        for (uint32_t k = 0; k < r->ways; k++) {
            fprintf(f, "%s\"%s\"", k ? ", " : "", cfg.devs[r->dev[k]]);
        }
        fputs("]}", f);
    }
    fputs(cfg.nregions ? "\n  ],\n" : "],\n", f);
}

static void json_series(FILE *f)
{
    size_t wd = series_width(), len;
    size_t order[MAX_NODES], nn = node_order(order);
    uint64_t *pts;

    /* Copy under the lock: a tick may grow (and move) the array. */
    pthread_mutex_lock(&series_lock);
    len = series_len;
    pts = xcalloc(len * wd, sizeof(uint64_t));
    memcpy(pts, series, len * wd * sizeof(uint64_t));
    pthread_mutex_unlock(&series_lock);

    fputs("  \"series\": [", f);
    for (size_t i = 0; i < len; i++) {
        const uint64_t *p = pts + i * wd, *prev = i ? p - wd : NULL;
        fprintf(f, "%s\n    {\"insns\": %" PRIu64 ", \"ns\": %" PRId64
                ", \"phase\": %" PRIu64 ", \"nodes\": {",
                i ? "," : "", p[0], (int64_t)p[1], p[2]);
        for (size_t k = 0; k < nn; k++) {
            size_t n = order[k];
            uint64_t d[2];
            for (int w = 0; w < 2; w++) {
                d[w] = p[3 + 2 * n + w] - (prev ? prev[3 + 2 * n + w] : 0);
            }
            fprintf(f, "%s\"%d\": ", k ? ", " : "", cfg.nodes[n].id);
            json_rw(f, d);
        }
        fputs("}}", f);
    }
    fputs(len ? "\n  ]\n" : "]\n", f);
    free(pts);
}

static bool write_output(bool exited, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    static char buf[1 << 20];
    Phase open;
    uint64_t *tot;
    DelaySum d;
    FILE *f;
    bool ok;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", cfg.out) >= sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", cfg.out);
        return false;
    }
    pthread_mutex_lock(&write_lock);
    cut(&open, false);
    tot = xcalloc(ncounters, sizeof(uint64_t));
    sum_counters(tot, &d);

    f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        free_phase(&open);
        free(tot);
        pthread_mutex_unlock(&write_lock);
        return false;
    }
    setvbuf(f, buf, _IOFBF, sizeof(buf));
    fprintf(f, "{\n  \"format\": %d,\n  \"plugin\": \"%s\",\n  \"version\": \"%s\",\n"
            "  \"api_version\": %d,\n  \"status\": \"%s\",\n  \"args\": [",
            OUTPUT_FORMAT, PLUGIN_NAME, PLUGIN_VERSION, QEMU_PLUGIN_VERSION,
            exited ? "exited" : "running");
    for (int i = 0; i < cfg.argc; i++) {
        fputs(i ? ", " : "", f);
        json_str(f, cfg.argv[i]);
    }
    fputs("],\n  \"added\": [", f);
    for (size_t i = 0; i < nadded; i++) {
        fputs(i ? ", " : "", f);
        json_str(f, added[i]);
    }
    fprintf(f, "],\n  \"vcpus\": %u,\n  \"sample\": %" PRIu64 ",\n  \"page_size\": %" PRIu64
            ",\n  \"pages\": %s,\n  \"pages_top\": %" PRIu64 ",\n  \"tick_insns\": %" PRIu64
            ",\n", max_vcpus, cfg.sample, PAGE_SIZE, cfg.pages ? "true" : "false",
            cfg.pages_top, cfg.tick_insns);
    fprintf(f, "  \"clock\": {\"insns\": %" PRIu64 ", \"ns\": %" PRId64 "},\n",
            open.end_insns, open.end_ns);
    fprintf(f, "  \"delay\": {\"enabled\": %s, \"active\": %s, \"min_ns\": %d, "
            "\"owed_ns\": %" PRIu64 ", \"slept_ns\": %" PRIu64 ", \"debt_ns\": %" PRId64
            ", \"sleeps\": %" PRIu64 ", \"max_overshoot_ns\": %" PRIu64 "},\n",
            cfg.delay ? "true" : "false",
            cfg.delay && __atomic_load_n(&delay_on, __ATOMIC_RELAXED) ? "true" : "false",
            DELAY_MIN_NS, d.owed_ns, d.slept_ns, (int64_t)(d.owed_ns - d.slept_ns), d.sleeps,
            d.max_over_ns);
    fprintf(f, "  \"bad_index\": %" PRIu64 ",\n", rd(&bad_index));
    if (cfg.interval) {
        fprintf(f, "  \"interval\": {\"n\": %" PRIu64 ", \"unit\": \"%s\"},\n", cfg.interval,
                cfg.interval_ns ? "ns" : "insn");
    } else {
        fputs("  \"interval\": null,\n", f);
    }
    json_config(f);
    fprintf(f, "  \"totals\": {\n    \"insns\": %" PRIu64 ",\n", open.end_insns);
    json_counts(f, tot, "    ");
    fputs("\n  },\n  \"phases\": [\n", f);
    for (size_t i = 0; i < nphases; i++) {
        json_phase(f, &phases[i], i);
        fputs(",\n", f);
    }
    json_phase(f, &open, nphases);
    fputs("\n  ],\n", f);
    json_series(f);
    fputs("}\n", f);

    ok = !ferror(f);
    if (fclose(f) || !ok) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        ok = false;
    } else if (rename(tmp, cfg.out)) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, cfg.out, strerror(errno));
        ok = false;
    }
    if (!ok) {
        unlink(tmp);
    }
    free_phase(&open);
    free(tot);
    pthread_mutex_unlock(&write_lock);
    return ok;
}

/* ---------------------------------------------------------------------------
 * The service thread: control socket and periodic flush
 */

typedef struct {
    int fd;
    size_t len;
    char buf[CONTROL_LINE];
} Client;

static int listen_fd = -1;
static int wake_pipe[2] = { -1, -1 };
static pthread_t service_thread;
static bool service_started;

static void reply(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(int fd, const char *fmt, ...)
{
    char line[CONTROL_LINE + 64];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n > sizeof(line) - 2) {
        n = (int)sizeof(line) - 2;
    }
    line[n++] = '\n';
    /* MSG_NOSIGNAL: a client that went away must not SIGPIPE QEMU. */
    for (int off = 0; off < n;) {
        ssize_t k = send(fd, line + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return;
        }
        off += (int)k;
    }
}

/*
 * "add node=... region=... lat=...": the same syntax as the command line,
 * all or nothing. Problems go back to the client, one line, "; " between.
 */
static void add_command(int fd, char *args)
{
    size_t saved_nodes = cfg.nnodes, saved_ranges = cfg.nranges,
           saved_regions = cfg.nregions, saved_devs = cfg.ndevs, saved_lats = nlats,
           first_added = nadded, size = 0;
    char *tok, *save = NULL, *msg = NULL;
    bool ok = true;

    err_sink = open_memstream(&msg, &size);
    if (!err_sink) {
        reply(fd, "error out of memory");
        return;
    }
    for (tok = strtok_r(args, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        /* Kept for the plugin's lifetime: ranges and regions point at it. */
        char *arg = strdup(tok);
        const char *v = strchr(arg, '=');
        added = grow(added, &added_cap, nadded + 1, sizeof(char *));
        added[nadded++] = arg;
        if (!v) {
            ok = fail(arg, "expected key=value");
        } else if (!strncmp(arg, "node=", 5)) {
            ok &= parse_node(arg, v + 1);
        } else if (!strncmp(arg, "region=", 7)) {
            ok &= parse_region(arg, v + 1);
        } else if (!strncmp(arg, "lat=", 4)) {
            ok &= parse_lat(arg, v + 1);
        } else {
            ok = fail(arg, "only node=, region= and lat= can be added");
        }
    }
    ok &= apply_lats(saved_lats);
    ok &= validate_map();
    if (!ok) {
        for (size_t i = saved_lats; i < nlats; i++) {
            int n = node_index(lats[i].id);
            if (n >= 0 && cfg.nodes[n].lat_arg == lats[i].arg) {
                cfg.nodes[n].lat_arg = NULL;
            }
        }
        cfg.nnodes = saved_nodes;
        cfg.nranges = saved_ranges;
        cfg.nregions = saved_regions;
        cfg.ndevs = saved_devs;
        nlats = saved_lats;
        for (size_t i = first_added; i < nadded; i++) {
            free(added[i]);
        }
        nadded = first_added;
    } else {
        publish_map();
    }
    fclose(err_sink);
    err_sink = NULL;
    if (ok) {
        reply(fd, "ok");
    } else {
        /* One reply line: the problems joined, without the plugin prefix. */
        char line[CONTROL_LINE];
        size_t len = 0, plen = strlen(PLUGIN_NAME ": ");
        char *save2 = NULL;
        line[0] = '\0';
        for (char *l = strtok_r(msg, "\n", &save2); l; l = strtok_r(NULL, "\n", &save2)) {
            if (!strncmp(l, PLUGIN_NAME ": ", plen)) {
                l += plen;
            }
            len += (size_t)snprintf(line + len, len < sizeof(line) ? sizeof(line) - len : 0,
                                    "%s%s", len ? "; " : "", l);
            if (len >= sizeof(line)) {
                break;
            }
        }
        free(msg);
        msg = strdup(line);
        reply(fd, "error %s", msg);
    }
    free(msg);
}

/*
 * "delay on|off". Switching off stops owing at once; a debt still
 * outstanding (under one threshold, or an oversleep's credit) is neither
 * slept while off, so nothing leaks into an off phase, nor dropped: it is
 * carried to the next "delay on", so owed and paid agree over the run.
 */
static void delay_command(int fd, const char *arg)
{
    bool on;

    if (!arg || (strcmp(arg, "on") && strcmp(arg, "off"))) {
        reply(fd, "error delay on|off: expected on or off");
        return;
    }
    on = !strcmp(arg, "on");
    if (on && !cfg.delay) {
        reply(fd, "error delay on: delay=on is needed at load (it installs the "
              "delaying callbacks)");
        return;
    }
    __atomic_store_n(&delay_on, on, __ATOMIC_RELAXED);
    reply(fd, "ok");
}

/*
 * Every limit and format constant a client must agree with, as one line
 * of JSON; integers and strings only.
 */
static void limits_command(int fd)
{
    reply(fd, "ok {\"plugin\": \"%s\", \"version\": \"%s\", \"api_version\": %d, "
          "\"output_format\": %d, \"max_nodes\": %d, \"max_regions\": %d, "
          "\"max_devs\": %d, \"max_name\": %d, \"max_node_id\": %d, \"max_lat_ns\": %d, "
          "\"max_sample\": %d, \"max_ways\": %d, \"min_granularity\": %d, "
          "\"max_granularity\": %d, \"page_size\": %" PRIu64 ", \"max_pages\": %" PRIu64
          ", \"max_flush_s\": %d, \"max_control_path\": %zu, \"tick_insns\": %d, "
          "\"delay_min_ns\": %d, \"control_line\": %d, \"control_clients\": %d}",
          PLUGIN_NAME, PLUGIN_VERSION, QEMU_PLUGIN_VERSION, OUTPUT_FORMAT, MAX_NODES,
          MAX_REGIONS, MAX_DEVS, MAX_NAME, MAX_NODE_ID, MAX_LAT_NS, MAX_SAMPLE, MAX_WAYS,
          MIN_GRAN, MAX_GRAN, PAGE_SIZE, MAX_PAGES, MAX_FLUSH_S, MAX_CONTROL_PATH, TICK_INSNS,
          DELAY_MIN_NS, CONTROL_LINE - 1, CONTROL_CLIENTS);
}

static void command(int fd, char *line)
{
    char err[PATH_MAX + 128];
    char *arg = strchr(line, ' ');

    if (arg) {
        *arg++ = '\0';
    }
    if (!strcmp(line, "snapshot")) {
        if (!arg || !valid_name(arg)) {
            reply(fd, "error snapshot NAME: NAME must be 1 to %d letters, digits, "
                  "'_', '-' or '.'", MAX_NAME);
            return;
        }
        snapshot(arg);
        if (!write_output(false, err, sizeof(err))) {
            reply(fd, "error %s", err);
            return;
        }
        reply(fd, "ok %zu", nphases - 1);
    } else if (!strcmp(line, "add") && arg) {
        add_command(fd, arg);
    } else if (!strcmp(line, "reset") && !arg) {
        reset();
        reply(fd, "ok");
    } else if (!strcmp(line, "flush") && !arg) {
        if (!write_output(false, err, sizeof(err))) {
            reply(fd, "error %s", err);
            return;
        }
        reply(fd, "ok");
    } else if (!strcmp(line, "delay")) {
        delay_command(fd, arg);
    } else if (!strcmp(line, "limits") && !arg) {
        limits_command(fd);
    } else if (!strcmp(line, "ping") && !arg) {
        reply(fd, "ok %s %s", PLUGIN_NAME, PLUGIN_VERSION);
    } else {
        reply(fd, "error unknown command (known: snapshot NAME, add KEY=VALUE..., reset, "
              "flush, delay on|off, limits, ping)");
    }
}

/* False when the client is done (end of file, error, or a line too long). */
static bool serve(Client *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    char *nl;

    if (n < 0 && errno == EINTR) {
        return true;
    }
    if (n <= 0) {
        return false;
    }
    c->len += (size_t)n;
    while ((nl = memchr(c->buf, '\n', c->len))) {
        size_t ll = (size_t)(nl - c->buf);
        *nl = '\0';
        if (ll && c->buf[ll - 1] == '\r') {
            c->buf[ll - 1] = '\0';
        }
        command(c->fd, c->buf);
        memmove(c->buf, nl + 1, c->len - ll - 1);
        c->len -= ll + 1;
    }
    if (c->len == sizeof(c->buf)) {
        reply(c->fd, "error line longer than %d bytes", CONTROL_LINE - 1);
        return false;
    }
    return true;
}

static void *service_main(void *unused)
{
    Client clients[CONTROL_CLIENTS];
    int64_t next_flush = now_ns() + (int64_t)cfg.flush_ms * 1000000;
    char err[PATH_MAX + 128];

    (void)unused;
    for (int i = 0; i < CONTROL_CLIENTS; i++) {
        clients[i].fd = -1;
    }
    for (;;) {
        struct pollfd pfd[2 + CONTROL_CLIENTS];
        int who[2 + CONTROL_CLIENTS];
        int np = 0, timeout = -1, free_slot = -1;

        pfd[np] = (struct pollfd){ .fd = wake_pipe[0], .events = POLLIN };
        who[np++] = -2;
        for (int i = 0; i < CONTROL_CLIENTS; i++) {
            if (clients[i].fd >= 0) {
                pfd[np] = (struct pollfd){ .fd = clients[i].fd, .events = POLLIN };
                who[np++] = i;
            } else if (free_slot < 0) {
                free_slot = i;
            }
        }
        if (listen_fd >= 0 && free_slot >= 0) {
            pfd[np] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
            who[np++] = -1;
        }
        if (cfg.flush_ms) {
            int64_t left = (next_flush - now_ns()) / 1000000;
            timeout = left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
        }
        if (poll(pfd, (nfds_t)np, timeout) < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, PLUGIN_NAME ": poll: %s\n", strerror(errno));
            break;
        }
        if (pfd[0].revents) {
            break;
        }
        if (cfg.flush_ms && now_ns() >= next_flush) {
            if (!write_output(false, err, sizeof(err))) {
                fprintf(stderr, PLUGIN_NAME ": %s\n", err);
            }
            next_flush = now_ns() + (int64_t)cfg.flush_ms * 1000000;
        }
        for (int k = 1; k < np; k++) {
            if (!pfd[k].revents) {
                continue;
            }
            if (who[k] == -1) {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0) {
                    clients[free_slot].fd = fd;
                    clients[free_slot].len = 0;
                }
            } else if (!serve(&clients[who[k]])) {
                close(clients[who[k]].fd);
                clients[who[k]].fd = -1;
            }
        }
    }
    for (int i = 0; i < CONTROL_CLIENTS; i++) {
        if (clients[i].fd >= 0) {
            close(clients[i].fd);
        }
    }
    return NULL;
}

static bool open_control(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;

    if (lstat(cfg.control, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return fail(NULL, "control=%s exists and is not a socket", cfg.control);
        }
        unlink(cfg.control);
    }
    strcpy(sa.sun_path, cfg.control);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(listen_fd, CONTROL_CLIENTS)) {
        fail(NULL, "control=%s: %s", cfg.control, strerror(errno));
        if (listen_fd >= 0) {
            close(listen_fd);
            listen_fd = -1;
        }
        return false;
    }
    return true;
}

static bool start_service(void)
{
    sigset_t all, old;
    int rc;

    if (pipe2(wake_pipe, O_CLOEXEC)) {
        return fail(NULL, "pipe: %s", strerror(errno));
    }
    /* QEMU handles signals on its own threads; ours must never take one. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&service_thread, NULL, service_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        return fail(NULL, "cannot start the service thread: %s", strerror(rc));
    }
    service_started = true;
    return true;
}

/* ---------------------------------------------------------------------------
 * Entry points
 */

static void plugin_exit(qemu_plugin_id_t id, void *udata)
{
    char err[PATH_MAX + 128];

    (void)id;
    (void)udata;
    if (service_started) {
        ssize_t rc = write(wake_pipe[1], "x", 1);
        (void)rc;
        pthread_join(service_thread, NULL);
        service_started = false;
    }
    if (!write_output(true, err, sizeof(err))) {
        fprintf(stderr, PLUGIN_NAME ": %s\n", err);
    }
    if (listen_fd >= 0) {
        close(listen_fd);
        listen_fd = -1;
        unlink(cfg.control);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info, int argc,
                                           char **argv)
{
    char err[PATH_MAX + 128];

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!info->system_emulation) {
        fail(NULL, "needs system emulation (qemu-system-*)");
        return -1;
    }
    cfg.argc = argc;
    cfg.argv = argv;
    if (!parse_args(argc, argv) || !validate_map()) {
        return -1;
    }
    publish_map();
    if (cfg.interval && !cfg.interval_ns) {
        /* Enough ticks per interval for points to land near their mark. */
        uint64_t q = cfg.interval / 4;
        cfg.tick_insns = q < 1 ? 1 : q > TICK_INSNS ? TICK_INSNS : q;
    } else {
        cfg.tick_insns = TICK_INSNS;
    }

    max_vcpus = info->system.max_vcpus > 0 ? (unsigned int)info->system.max_vcpus : 1;
    /* Own cache line per vCPU: no false sharing with the reader. */
    vcpu_stride = (sizeof(Vcpu) + ncounters * sizeof(uint64_t) + 63) & ~(size_t)63;
    vcpu_mem = aligned_alloc(64, vcpu_stride * max_vcpus);
    if (!vcpu_mem) {
        fail(NULL, "out of memory");
        return -1;
    }
    memset(vcpu_mem, 0, vcpu_stride * max_vcpus);
    for (unsigned int i = 0; i < max_vcpus; i++) {
        Vcpu *v = vcpu_at(i);
        v->rng = UINT64_C(0x9E3779B97F4A7C15) * (i + 1);
        v->countdown = cfg.sample > 1 ? next_gap(v) : 1;
    }
    open_base = xcalloc(ncounters, sizeof(uint64_t));
    if (cfg.interval) {
        series_next = cfg.interval;
    }
    delay_on = cfg.delay;
    mem_cb = cfg.sample > 1 ? (cfg.delay ? mem_sampled_delay : mem_sampled)
                            : (cfg.delay ? mem_exact_delay : mem_exact);

    /* Fail now, with the reason, rather than after a whole run. */
    if (!write_output(false, err, sizeof(err))) {
        fail(NULL, "out=%s: %s", cfg.out, err);
        return -1;
    }
    if (cfg.control && !open_control()) {
        return -1;
    }
    if ((cfg.control || cfg.flush_ms) && !start_service()) {
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
