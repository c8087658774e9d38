/* Raw memory-policy syscalls (the guest has no libnuma), pagemap and
 * kpageflags translation, and the facts about the calling process that
 * decide what it is allowed to see. */
#ifndef CXLPROG_MEM_H
#define CXLPROG_MEM_H

#include "json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* From include/uapi/linux/mempolicy.h; spelled out because the guest has
 * no numaif.h and the host's may not be installed. */
#define CXL_MPOL_DEFAULT 0
#define CXL_MPOL_BIND 2
#define CXL_MPOL_MF_MOVE (1 << 1)
#define CXL_MPOL_MF_MOVE_ALL (1 << 2)

/* Pre-filled into every status array: the kernel never writes it, so an
 * entry still holding it was not reached by the call. */
#define STATUS_UNTOUCHED (-9999)

/* Each returns the raw result; on -1, *err holds errno (else 0). */
long sys_move_pages(pid_t pid, unsigned long n, void **pages, const int *nodes, int *status,
		    int flags, int *err);
long sys_move_phys_pages(unsigned long n, const uint64_t *pas, const int *nodes, int *status,
			 int flags, int *err);
/* MPOL_BIND to one node; 0 or -errno. */
int bind_to_node(void *addr, size_t len, int node);
/* Back to the task's policy (MPOL_DEFAULT), pages left where they are; 0 or -errno. */
int unbind(void *addr, size_t len);

struct pm_entry {
	bool present;
	bool swapped;
	bool file_or_shared;
	bool exclusive;
	uint64_t pfn; /* 0 when hidden or not present */
};
/* pid 0 means this process. Returns an fd or -errno. */
int pagemap_open(pid_t pid);
int pagemap_get(int fd, uint64_t va, struct pm_entry *e);

/* What one virtual page looks like from user space. */
struct page_view {
	uint64_t va;
	int pm_err; /* 0 or the errno of reading pagemap */
	struct pm_entry pm;
	bool pfn_known;
	const char *pfn_reason; /* why pfn is unknown */
	bool kflags_known;
	uint64_t kflags;
	bool kcount_known;
	uint64_t kcount;
	int node; /* node, or -errno from move_pages */
};

/* Fills views for n addresses of process pid (0 = self); the node lookup is
 * one move_pages call for all of them. pm_fd is from pagemap_open. */
void view_pages(pid_t pid, int pm_fd, const uint64_t *vas, size_t n, struct page_view *out);
void json_page_view(struct json *j, const struct page_view *v, long index);
/* "node_counts": {"0": n, ...} plus "unknown_node" for pages with none. */
void json_node_counts(struct json *j, const struct page_view *v, size_t n);

/* kpageflags/kpagecount for one PFN when readable (root only). */
void kpage_get(uint64_t pfn, bool *flags_known, uint64_t *flags, bool *count_known,
	       uint64_t *count);
void json_kflags(struct json *j, const char *key, uint64_t flags);
/* A PA with what the kernel reports about its frame, when it can be read. */
void json_frame(struct json *j, uint64_t pa);

bool has_cap_sys_admin(void);
/* pid, uid, euid, capability and kernel release: what decides visibility. */
void json_process(struct json *j);

/* Whether calling syscall nr as move_phys_pages is safe and meaningful on
 * the running kernel; see the README for the rules. */
struct syscall_probe {
	bool call;
	const char *how;
};
struct syscall_probe probe_move_phys_pages(bool force);

/* Reads /sys/devices/system/node/online, e.g. "0-1"; NULL when missing. */
const char *nodes_online(void);

#endif
