// SPDX-License-Identifier: GPL-2.0
/*
 * oxvm guest selftest: built into oxvm's test guest kernel
 * (resources/guest/build.sh copies it to drivers/misc/oxvm_selftest.c).
 *
 * Guest user space does not run on the project's PVM KVM hosts, so the test
 * guest proves device behaviour from inside the kernel: this code runs a list
 * of checks named on the kernel command line and prints one parsable line
 * per check on the console, then powers the VM off.
 *
 * Command line:  oxvm.selftest=<check>[,<check>...]
 * Without that parameter this file does nothing at all.
 *
 * Console protocol (each line starts with "OXVM-SELFTEST "; the kernel's own
 * "[    1.234567] " timestamp comes before it when PRINTK_TIME is on):
 *
 *   OXVM-SELFTEST <check> ok <details>
 *   OXVM-SELFTEST <check> fail <reason>
 *   OXVM-SELFTEST <name> fail unknown-check      (name not in the table)
 *   OXVM-SELFTEST done                           (after the last check)
 *   OXVM-SELFTEST power-button pressed           (KEY_POWER seen, see below)
 *
 * A check may also print marker lines for host-side measurements, before
 * its result line; they start with "OXVM-MARK <check> " and are never
 * results (the blkbench check, oxvm_selftest_bench.c, marks the start and
 * the end of its write phase so the host can sample its own CPU times):
 *
 *   OXVM-MARK <check> <event> [<key>=<value> ...]
 *
 * A check name may appear several times in oxvm.selftest=; it runs (and
 * reports) each time. blkbench takes its next job from oxvm.blkbench= on
 * each run.
 *
 * After "done" the kernel powers off with kernel_power_off(). If that
 * returns (no power-off method), it restarts instead (emergency_restart(),
 * which with reboot=k resets through the keyboard controller).
 *
 * The checks run at late_initcall_sync, after wait_for_device_probe(), i.e.
 * after all built-in drivers probed and after ip= (CONFIG_IP_PNP)
 * configured the network.
 *
 * The "idle" check:
 *   `idle` MUST BE THE LAST CHECK in the list. It prints
 *   "OXVM-SELFTEST idle ok waiting" and then never returns from the
 *   initcall (it sleeps forever), so "done" is not printed and the kernel
 *   neither powers off nor goes on to mount a root file system. The VM stays
 *   up, halted most of the time, until its power button is pressed: the
 *   KEY_POWER input handler registered at device_initcall (only when
 *   oxvm.selftest= is given) prints "OXVM-SELFTEST power-button pressed" and
 *   powers off from a work item with kernel_power_off() (orderly_poweroff()
 *   does not finish without user space). Checks named after `idle` are never
 *   run; each is reported as "OXVM-SELFTEST <name> fail after-idle" just
 *   before the idle line.
 *
 * Adding a check: write `static int oxvm_check_<name>(char *details,
 * size_t len)` that returns 0 on success or a negative value on failure and
 * writes its details (on success) or the reason (on failure) into
 * `details` (a single line, no newline, no spaces needed but allowed), then
 * add it to oxvm_checks[].
 */

#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/device/driver.h>
#include <linux/init.h>
#include <linux/input.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/printk.h>
#include <linux/reboot.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include <asm/e820/api.h>
#include <asm/e820/types.h>

#include "oxvm_selftest.h"

#define OXVM_PREFIX "OXVM-SELFTEST "
#define OXVM_ARG_MAX 256
/* Large enough for several disks; printk keeps lines up to ~1000 bytes. */
#define OXVM_DETAILS_MAX 900

/* The value of oxvm.selftest=, copied; empty when the parameter is absent. */
static char oxvm_selftest_arg[OXVM_ARG_MAX] __initdata;
static bool oxvm_selftest_enabled;

static int __init oxvm_selftest_setup(char *str)
{
	strscpy(oxvm_selftest_arg, str, sizeof(oxvm_selftest_arg));
	oxvm_selftest_enabled = true;
	return 1;
}
__setup("oxvm.selftest=", oxvm_selftest_setup);

/* ---- Checks --------------------------------------------------------------- */

/* boot: the CPUs and memory the guest sees. */
static int __init oxvm_check_boot(char *details, size_t len)
{
	unsigned long long ram_kib = 0;
	unsigned int nr, i;

	if (!e820_table) {
		scnprintf(details, len, "no-e820-table");
		return -ENOENT;
	}
	nr = e820_table->nr_entries;
	for (i = 0; i < nr && i < ARRAY_SIZE(e820_table->entries); i++) {
		if (e820_table->entries[i].type == E820_TYPE_RAM)
			ram_kib += e820_table->entries[i].size >> 10;
	}
	scnprintf(details, len, "cpus=%u mem_kib=%lu e820=%u ram_kib=%llu",
		  num_online_cpus(),
		  totalram_pages() << (PAGE_SHIFT - 10),
		  nr, ram_kib);
	return 0;
}

/*
 * idle: stay up until the power button is pressed. The runner handles the
 * never-returning part (see OXVM_CHECK_IDLE); this only sets the details.
 */
static int __init oxvm_check_idle(char *details, size_t len)
{
	scnprintf(details, len, "waiting");
	return 0;
}

#define OXVM_CHECK_IDLE 0x1 /* after reporting, sleep forever; must be last */

struct oxvm_check {
	const char *name;
	int (*fn)(char *details, size_t len);
	unsigned int flags;
};

static const struct oxvm_check oxvm_checks[] __initconst = {
	{ "boot", oxvm_check_boot, 0 },
	{ "blk", oxvm_check_blk, 0 },
	{ "scsi", oxvm_check_scsi, 0 },
	{ "net", oxvm_check_net, 0 },
	{ "blkbench", oxvm_check_blkbench, 0 },
	{ "idle", oxvm_check_idle, OXVM_CHECK_IDLE },
};

/* ---- Power button ------------------------------------------------------- */

static void oxvm_poweroff_fn(struct work_struct *work)
{
	kernel_power_off();
	/* Only reached when the machine has no power-off method. */
	pr_emerg("oxvm selftest: power-off failed, restarting\n");
	emergency_restart();
}
static DECLARE_WORK(oxvm_poweroff_work, oxvm_poweroff_fn);

static void oxvm_pb_event(struct input_handle *handle, unsigned int type,
			  unsigned int code, int value)
{
	/* value: 1 press, 0 release, 2 autorepeat. */
	if (type == EV_KEY && code == KEY_POWER && value == 1) {
		pr_info(OXVM_PREFIX "power-button pressed\n");
		schedule_work(&oxvm_poweroff_work);
	}
}

static int oxvm_pb_connect(struct input_handler *handler,
			   struct input_dev *dev,
			   const struct input_device_id *id)
{
	struct input_handle *handle;
	int err;

	handle = kzalloc(sizeof(*handle), GFP_KERNEL);
	if (!handle)
		return -ENOMEM;
	handle->dev = dev;
	handle->handler = handler;
	handle->name = "oxvm_selftest";

	err = input_register_handle(handle);
	if (err)
		goto err_free;
	err = input_open_device(handle);
	if (err)
		goto err_unregister;
	pr_info("oxvm selftest: watching %s for KEY_POWER\n",
		dev->name ? dev->name : "input device");
	return 0;

err_unregister:
	input_unregister_handle(handle);
err_free:
	kfree(handle);
	return err;
}

static void oxvm_pb_disconnect(struct input_handle *handle)
{
	input_close_device(handle);
	input_unregister_handle(handle);
	kfree(handle);
}

static const struct input_device_id oxvm_pb_ids[] = {
	{
		.flags = INPUT_DEVICE_ID_MATCH_EVBIT |
			 INPUT_DEVICE_ID_MATCH_KEYBIT,
		.evbit = { BIT_MASK(EV_KEY) },
		.keybit = { [BIT_WORD(KEY_POWER)] = BIT_MASK(KEY_POWER) },
	},
	{ },
};

static struct input_handler oxvm_pb_handler = {
	.event = oxvm_pb_event,
	.connect = oxvm_pb_connect,
	.disconnect = oxvm_pb_disconnect,
	.name = "oxvm_selftest",
	.id_table = oxvm_pb_ids,
};

/* Early, so it is ready before the ACPI button device appears and idle runs. */
static int __init oxvm_selftest_input_init(void)
{
	int err;

	if (!oxvm_selftest_enabled)
		return 0;
	err = input_register_handler(&oxvm_pb_handler);
	if (err)
		pr_err("oxvm selftest: input_register_handler: %d\n", err);
	return 0;
}
device_initcall(oxvm_selftest_input_init);

/* ---- Runner ------------------------------------------------------------- */

static const struct oxvm_check *oxvm_find_check(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(oxvm_checks); i++)
		if (!strcmp(oxvm_checks[i].name, name))
			return &oxvm_checks[i];
	return NULL;
}

static void __noreturn oxvm_idle_forever(void)
{
	for (;;)
		msleep_interruptible(1000);
}

static int __init oxvm_selftest_run(void)
{
	static char details[OXVM_DETAILS_MAX] __initdata;
	char *cur = oxvm_selftest_arg;
	char *name;

	if (!oxvm_selftest_enabled)
		return 0;

	wait_for_device_probe();
	pr_info("oxvm selftest: running %s\n", oxvm_selftest_arg);

	while ((name = strsep(&cur, ",")) != NULL) {
		const struct oxvm_check *check;
		int ret;

		if (!*name)
			continue;
		check = oxvm_find_check(name);
		if (!check) {
			pr_info(OXVM_PREFIX "%s fail unknown-check\n", name);
			continue;
		}

		details[0] = '\0';
		ret = check->fn(details, sizeof(details));
		if (ret == 0 && (check->flags & OXVM_CHECK_IDLE)) {
			/* Checks after idle never run: say so, loudly. */
			while ((name = strsep(&cur, ",")) != NULL)
				if (*name)
					pr_info(OXVM_PREFIX "%s fail after-idle\n",
						name);
			pr_info(OXVM_PREFIX "%s ok %s\n", check->name, details);
			oxvm_idle_forever();
		}
		if (ret == 0)
			pr_info(OXVM_PREFIX "%s ok %s\n", check->name, details);
		else
			pr_info(OXVM_PREFIX "%s fail %s\n", check->name,
				details[0] ? details : "error");
	}

	pr_info(OXVM_PREFIX "done\n");
	oxvm_poweroff_fn(NULL);
	return 0;
}
late_initcall_sync(oxvm_selftest_run);
