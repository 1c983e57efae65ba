/* SPDX-License-Identifier: GPL-2.0 */
/*
 * oxvm selftest: checks shared between the selftest files. Each check writes
 * one line of details (on success) or the reason (on failure) into `details`
 * and returns 0 or a negative errno.
 */
#ifndef OXVM_SELFTEST_H
#define OXVM_SELFTEST_H

#include <linux/init.h>
#include <linux/types.h>

int __init oxvm_check_blk(char *details, size_t len);
int __init oxvm_check_scsi(char *details, size_t len);
int __init oxvm_check_net(char *details, size_t len);
int __init oxvm_check_blkbench(char *details, size_t len);

/* Value of oxvm.net= ("<host-ipv4>:<udp-port>"), or NULL. */
extern const char *oxvm_net_target;

#endif
