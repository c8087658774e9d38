/*
 * nullcb: the cheapest plugin that is called for every guest memory access.
 *
 * The callback returns at once. Any plugin that needs each access's address
 * (QEMU 10.0's plugin API has no conditional memory callback, and inline
 * ops never see an address) pays at least this much; the benchmark prints
 * it next to cxlrig-mem's exact and sampled modes.
 *
 * SPDX-License-Identifier: GPL-2.0-only
 */
#include <stddef.h>
#include <stdint.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static void on_access(unsigned int vcpu_index, qemu_plugin_meminfo_t info,
                      uint64_t vaddr, void *udata)
{
    (void)vcpu_index;
    (void)info;
    (void)vaddr;
    (void)udata;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);

    (void)id;
    for (size_t i = 0; i < n; i++) {
        qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_access,
                                         QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW,
                                         NULL);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    (void)argv;
    if (argc) {
        return -1; /* takes no arguments */
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    return 0;
}
