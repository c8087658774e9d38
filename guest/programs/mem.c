#define _GNU_SOURCE
#include "mem.h"

#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifndef NR_MOVE_PHYS_PAGES
#error "NR_MOVE_PHYS_PAGES must come from the kernel patch (see the Makefile)"
#endif

long sys_move_pages(pid_t pid, unsigned long n, void **pages, const int *nodes, int *status,
		    int flags, int *err)
{
	long r = syscall(SYS_move_pages, pid, n, pages, nodes, status, flags);

	*err = r < 0 ? errno : 0;
	return r;
}

long sys_move_phys_pages(unsigned long n, const uint64_t *pas, const int *nodes, int *status,
			 int flags, int *err)
{
#if UINTPTR_MAX == UINT64_MAX
	long r = syscall(NR_MOVE_PHYS_PAGES, n, pas, nodes, status, flags);
#else
	/* The ABI is an array of pointers: a 32-bit caller passes 32 bits per
	 * address, so a physical address above 4 GiB cannot be named at all;
	 * only its low half reaches the kernel (the point Arnd Bergmann made). */
	uint32_t *narrow = xcalloc(n ? n : 1, sizeof(*narrow));
	for (unsigned long i = 0; i < n; i++)
		narrow[i] = (uint32_t)pas[i];
	long r = syscall(NR_MOVE_PHYS_PAGES, n, narrow, nodes, status, flags);
	int saved = errno;
	free(narrow);
	errno = saved;
#endif

	*err = r < 0 ? errno : 0;
	return r;
}

int bind_to_node(void *addr, size_t len, int node)
{
	/* 1024 nodes is the kernel's largest NODES_SHIFT on x86_64. */
	unsigned long mask[1024 / (8 * sizeof(unsigned long))] = { 0 };
	const unsigned long bits = 8 * sizeof(unsigned long);

	if (node < 0 || (unsigned long)node >= bits * (sizeof(mask) / sizeof(mask[0])))
		return -EINVAL;
	mask[node / bits] |= 1UL << (node % bits);
	/* The kernel drops the last bit of maxnode (a historical off-by-one
	 * that libnuma also compensates for). */
	if (syscall(SYS_mbind, addr, len, CXL_MPOL_BIND, mask, bits * (sizeof(mask) / sizeof(mask[0])) + 1,
		    0) < 0)
		return -errno;
	return 0;
}

int unbind(void *addr, size_t len)
{
	if (syscall(SYS_mbind, addr, len, CXL_MPOL_DEFAULT, NULL, 0UL, 0) < 0)
		return -errno;
	return 0;
}

int pagemap_open(pid_t pid)
{
	char path[64];

	if (pid)
		snprintf(path, sizeof(path), "/proc/%ld/pagemap", (long)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/pagemap");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int pagemap_get(int fd, uint64_t va, struct pm_entry *e)
{
	uint64_t raw;

	memset(e, 0, sizeof(*e));
	if (fd < 0)
		return fd;
	ssize_t n = pread(fd, &raw, sizeof(raw), (off_t)(va / PAGE_SIZE_4K * sizeof(raw)));
	if (n < 0)
		return -errno;
	if (n != sizeof(raw))
		return -EIO;
	e->present = raw >> 63 & 1;
	e->swapped = raw >> 62 & 1;
	e->file_or_shared = raw >> 61 & 1;
	e->exclusive = raw >> 56 & 1;
	e->pfn = e->present ? raw & ((1ULL << 55) - 1) : 0;
	return 0;
}

static int kpageflags_fd = -2, kpagecount_fd = -2;

static bool read_kpage(int *fd, const char *path, uint64_t pfn, uint64_t *out)
{
	if (*fd == -2)
		*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0)
		return false;
	return pread(*fd, out, sizeof(*out), (off_t)(pfn * sizeof(*out))) == sizeof(*out);
}

void kpage_get(uint64_t pfn, bool *flags_known, uint64_t *flags, bool *count_known,
	       uint64_t *count)
{
	*flags_known = read_kpage(&kpageflags_fd, "/proc/kpageflags", pfn, flags);
	*count_known = read_kpage(&kpagecount_fd, "/proc/kpagecount", pfn, count);
}

/* include/uapi/linux/kernel-page-flags.h, bit by bit. */
static const char *const kflag_names[] = {
	"locked",	 "error",	 "referenced", "uptodate",  "dirty",	 "lru",
	"active",	 "slab",	 "writeback",  "reclaim",   "buddy",	 "mmap",
	"anon",		 "swapcache",	 "swapbacked", "compound_head", "compound_tail", "huge",
	"unevictable",	 "hwpoison",	 "nopage",     "ksm",	    "thp",	 "offline",
	"zero_page",	 "idle",	 "pgtable",
};

void json_kflags(struct json *j, const char *key, uint64_t flags)
{
	json_arr_begin(j, key);
	for (size_t b = 0; b < sizeof(kflag_names) / sizeof(kflag_names[0]); b++)
		if (flags >> b & 1)
			json_str(j, NULL, kflag_names[b]);
	json_arr_end(j);
}

void json_frame(struct json *j, uint64_t pa)
{
	uint64_t pfn = pa / PAGE_SIZE_4K, flags = 0, count = 0;
	bool fk, ck;

	kpage_get(pfn, &fk, &flags, &ck, &count);
	json_obj_begin(j, NULL);
	json_hex(j, "pa", pa);
	json_uint(j, "pfn", pfn);
	if (fk)
		json_kflags(j, "flags", flags);
	else
		json_null(j, "flags");
	if (ck)
		json_uint(j, "mapcount", count);
	else
		json_null(j, "mapcount");
	json_obj_end(j);
}

void view_pages(pid_t pid, int pm_fd, const uint64_t *vas, size_t n, struct page_view *out)
{
	void **ptrs = xcalloc(n, sizeof(*ptrs));
	int *status = xcalloc(n, sizeof(*status));

	for (size_t i = 0; i < n; i++) {
		struct page_view *v = &out[i];

		memset(v, 0, sizeof(*v));
		v->va = vas[i];
		ptrs[i] = (void *)(uintptr_t)vas[i];
		status[i] = STATUS_UNTOUCHED;
		v->pm_err = -pagemap_get(pm_fd, vas[i], &v->pm);
		if (v->pm_err) {
			v->pfn_reason = "pagemap could not be read";
		} else if (!v->pm.present) {
			v->pfn_reason = v->pm.swapped ? "swapped out" : "not present";
		} else if (v->pm.pfn == 0) {
			/* Since Linux 4.2 (rowhammer) the PFN field reads as 0
			 * unless the opener has CAP_SYS_ADMIN in the initial user
			 * namespace; 0 is not a real user frame here. */
			v->pfn_reason = "hidden: pagemap shows PFNs only with CAP_SYS_ADMIN "
					"in the initial user namespace";
		} else {
			v->pfn_known = true;
			kpage_get(v->pm.pfn, &v->kflags_known, &v->kflags, &v->kcount_known,
				  &v->kcount);
		}
	}
	int err;
	/* nodes == NULL asks only where each page is. */
	long r = n ? sys_move_pages(pid, n, ptrs, NULL, status, 0, &err) : 0;
	for (size_t i = 0; i < n; i++) {
		if (r < 0)
			out[i].node = -err;
		else
			out[i].node = status[i];
	}
	free(ptrs);
	free(status);
}

void json_page_view(struct json *j, const struct page_view *v, long index)
{
	json_obj_begin(j, NULL);
	if (index >= 0)
		json_int(j, "i", index);
	json_hex(j, "va", v->va);
	json_bool(j, "present", v->pm.present);
	if (v->pfn_known) {
		json_uint(j, "pfn", v->pm.pfn);
		json_hex(j, "pa", v->pm.pfn * PAGE_SIZE_4K + (v->va % PAGE_SIZE_4K));
	} else {
		json_null(j, "pfn");
		json_null(j, "pa");
		json_str(j, "pfn_reason", v->pfn_reason);
	}
	if (v->node >= 0) {
		json_int(j, "node", v->node);
	} else {
		json_null(j, "node");
		json_str(j, "node_error",
			 v->node == STATUS_UNTOUCHED ? "untouched" : errno_name(-v->node));
	}
	if (!v->pm_err) {
		json_bool(j, "exclusive", v->pm.exclusive);
		json_bool(j, "file_or_shared", v->pm.file_or_shared);
	}
	if (v->kflags_known)
		json_kflags(j, "flags", v->kflags);
	if (v->kcount_known)
		json_uint(j, "mapcount", v->kcount);
	json_obj_end(j);
}

void json_node_counts(struct json *j, const struct page_view *v, size_t n)
{
	/* Nodes are small integers; 64 covers any emulated machine here and
	 * anything larger still lands in "other_node". */
	size_t counts[64] = { 0 }, unknown = 0, other = 0;

	for (size_t i = 0; i < n; i++) {
		if (v[i].node < 0)
			unknown++;
		else if (v[i].node < 64)
			counts[v[i].node]++;
		else
			other++;
	}
	json_obj_begin(j, "node_counts");
	for (int node = 0; node < 64; node++) {
		char key[16];

		if (!counts[node])
			continue;
		snprintf(key, sizeof(key), "%d", node);
		json_uint(j, key, counts[node]);
	}
	json_obj_end(j);
	json_uint(j, "unknown_node", unknown + other);
}

static bool read_small_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = '\0';
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = '\0';
	return true;
}

bool has_cap_sys_admin(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	bool cap = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		uint64_t eff;

		if (strncmp(line, "CapEff:", 7) == 0) {
			char *p = line + 7;
			while (*p == ' ' || *p == '\t')
				p++;
			p[strcspn(p, "\n")] = '\0';
			if (parse_u64(p, 16, &eff))
				cap = eff >> 21 & 1; /* CAP_SYS_ADMIN */
			break;
		}
	}
	fclose(f);
	return cap;
}

void json_process(struct json *j)
{
	struct utsname u;

	json_int(j, "pid", getpid());
	json_int(j, "uid", getuid());
	json_int(j, "euid", geteuid());
	/* In a user namespace this is true while pagemap and capable() still
	 * say no: both check the initial namespace. */
	json_bool(j, "cap_sys_admin", has_cap_sys_admin());
	json_uint(j, "pointer_bits", 8 * sizeof(void *));
	json_str(j, "kernel", uname(&u) == 0 ? u.release : NULL);
}

const char *nodes_online(void)
{
	static char buf[256];

	return read_small_file("/sys/devices/system/node/online", buf, sizeof(buf)) ? buf : NULL;
}

/* Lines of /proc/kallsyms end in the symbol name, optionally followed by a
 * module name in brackets; the syscall may appear as __x64_sys_..,
 * __se_sys_.., __do_sys_.. or sys_.. depending on the kernel config. */
static int kallsyms_has(const char *needle)
{
	FILE *f = fopen("/proc/kallsyms", "re");
	char line[512];
	int found = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, needle)) {
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

struct syscall_probe probe_move_phys_pages(bool force)
{
	struct utsname u;
	unsigned long major = 0, minor = 0;

	if (force)
		return (struct syscall_probe){ true, "forced by --force-syscall" };
	if (uname(&u) == 0 && sscanf(u.release, "%lu.%lu", &major, &minor) == 2 &&
	    (major < 6 || (major == 6 && minor <= 12)) && NR_MOVE_PHYS_PAGES >= 463)
		/* Through 6.12 the x86_64 table ends at 462, so an unpatched
		 * kernel answers ENOSYS itself. */
		return (struct syscall_probe){ true, "number unassigned upstream on this release" };
	/* From 6.13 on, 463 and up belong to other syscalls (setxattrat, ...):
	 * calling the number blindly would run one of those instead. */
	switch (kallsyms_has("sys_move_phys_pages")) {
	case 1:
		return (struct syscall_probe){ true, "found in /proc/kallsyms" };
	case 0:
		return (struct syscall_probe){
			false, "not in /proc/kallsyms: this kernel has no move_phys_pages, and "
			       "the number belongs to another syscall on this release"
		};
	default:
		return (struct syscall_probe){
			false, "/proc/kallsyms unreadable and the number may belong to another "
			       "syscall on this release (use --force-syscall to call anyway)"
		};
	}
}
