// SPDX-License-Identifier: GPL-2.0
/*
 * oxvm selftest checks `blk` (virtio-blk disks, vd*) and `scsi` (sd* disks
 * behind virtio-scsi), through Linux's own block drivers.
 *
 * For every whole disk with the check's name prefix:
 *  - read-only disks: opening for write must be refused (or the write must
 *    fail); the first 16 bytes are read and reported as hex.
 *  - writable disks: a 4 KiB pattern is written at offset 1 MiB, fsync'ed
 *    (a FLUSH / SYNCHRONIZE CACHE to the device), the page cache dropped, and
 *    read back from the device and compared. When the queue supports discard,
 *    4 MiB at offset 8 MiB are discarded (the host checks the blocks were
 *    freed in the image).
 *
 * The pattern, which the host side of the test also checks in the image:
 * bytes 0..63 hold "OXVM-PATTERN <disk>\n" padded with spaces to 64 bytes;
 * byte j (64 <= j < 4096) is (j * 7 + 3) & 0xff.
 *
 * Details: one entry per disk, space separated:
 *   <disk>:rw,sectors=<n>,write=ok,flush=ok,verify=ok,discard=ok|unsupported,serial=<s>
 *   <disk>:ro,sectors=<n>,write=refused,head=<32 hex digits>,serial=<s>
 */

#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/init_syscalls.h>
#include <linux/kdev_t.h>
#include <linux/kernel.h>
#include <linux/pagemap.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "oxvm_selftest.h"

#define OXVM_MAX_DISKS 8
#define OXVM_PATTERN_OFF (1ULL << 20)
#define OXVM_PATTERN_LEN 4096
#define OXVM_DISCARD_OFF (8ULL << 20)
#define OXVM_DISCARD_LEN (4ULL << 20)

struct oxvm_disks {
	const char *prefix;
	int n;
	char names[OXVM_MAX_DISKS][32];
	dev_t devts[OXVM_MAX_DISKS];
};

static int __init oxvm_collect_disk(struct device *dev, void *data)
{
	struct oxvm_disks *d = data;
	struct block_device *bdev = dev_to_bdev(dev);
	const char *name = dev_name(dev);

	if (bdev_is_partition(bdev) || strncmp(name, d->prefix, 2) != 0)
		return 0;
	if (d->n >= OXVM_MAX_DISKS)
		return 0;
	strscpy(d->names[d->n], name, sizeof(d->names[0]));
	d->devts[d->n] = dev->devt;
	d->n++;
	return 0;
}

static void __init oxvm_fill_pattern(u8 *buf, const char *disk)
{
	int j, n;

	memset(buf, ' ', 64);
	n = scnprintf(buf, 64, "OXVM-PATTERN %s\n", disk);
	buf[n] = ' ';
	buf[63] = '\n';
	for (j = 64; j < OXVM_PATTERN_LEN; j++)
		buf[j] = (j * 7 + 3) & 0xff;
}

/* Read a small sysfs attribute (sysfs is mounted on /sys by the caller). */
static void __init oxvm_read_attr(const char *path, char *out, size_t len)
{
	struct file *f;
	loff_t pos = 0;
	ssize_t n;
	size_t i;

	out[0] = '\0';
	f = filp_open(path, O_RDONLY, 0);
	if (IS_ERR(f)) {
		strscpy(out, "-", len);
		return;
	}
	n = kernel_read(f, out, len - 1, &pos);
	filp_close(f, NULL);
	if (n <= 0) {
		strscpy(out, "-", len);
		return;
	}
	out[n] = '\0';
	/* One token: stop at whitespace or a control byte. */
	for (i = 0; out[i]; i++) {
		if (out[i] <= ' ' || out[i] > '~') {
			out[i] = '\0';
			break;
		}
	}
	if (!out[0])
		strscpy(out, "-", len);
}

/* virtio-blk: /sys/block/vdX/serial; sd: the text of VPD page 0x80. */
static void __init oxvm_disk_serial(const char *disk, char *out, size_t len)
{
	char path[96];

	if (disk[0] == 'v') {
		snprintf(path, sizeof(path), "/sys/block/%s/serial", disk);
		oxvm_read_attr(path, out, len);
	} else {
		char raw[64];
		struct file *f;
		loff_t pos = 0;
		ssize_t n;
		int i, plen;

		strscpy(out, "-", len);
		snprintf(path, sizeof(path), "/sys/block/%s/device/vpd_pg80", disk);
		f = filp_open(path, O_RDONLY, 0);
		if (IS_ERR(f))
			return;
		n = kernel_read(f, raw, sizeof(raw), &pos);
		filp_close(f, NULL);
		if (n < 4)
			return;
		plen = min_t(int, raw[3], n - 4);
		for (i = 0; i < plen && i < (int)len - 1; i++)
			out[i] = (raw[4 + i] > ' ' && raw[4 + i] <= '~') ? raw[4 + i] : '_';
		out[i] = '\0';
		if (!i)
			strscpy(out, "-", len);
	}
}

static int __init oxvm_check_one(const char *disk, dev_t devt, char *out, size_t len)
{
	char path[48], serial[48];
	struct block_device *bdev;
	struct file *f;
	u8 *buf, *back;
	loff_t pos;
	ssize_t n;
	int ret = 0, err;

	snprintf(path, sizeof(path), "/dev/%s", disk);
	err = init_mknod(path, S_IFBLK | 0600, new_encode_dev(devt));
	if (err && err != -EEXIST) {
		scnprintf(out, len, "%s:mknod=%d", disk, err);
		return err;
	}
	oxvm_disk_serial(disk, serial, sizeof(serial));

	buf = kmalloc(OXVM_PATTERN_LEN, GFP_KERNEL);
	back = kmalloc(OXVM_PATTERN_LEN, GFP_KERNEL);
	if (!buf || !back) {
		ret = -ENOMEM;
		scnprintf(out, len, "%s:nomem", disk);
		goto out_free;
	}

	f = filp_open(path, O_RDWR | O_LARGEFILE, 0);
	if (!IS_ERR(f)) {
		bdev = I_BDEV(f->f_mapping->host);
		if (bdev_read_only(bdev)) {
			/* Opened, but the queue is read-only: a write must fail. */
			pos = OXVM_PATTERN_OFF;
			oxvm_fill_pattern(buf, disk);
			n = kernel_write(f, buf, OXVM_PATTERN_LEN, &pos);
			filp_close(f, NULL);
			if (n >= 0) {
				scnprintf(out, len, "%s:ro,write=accepted", disk);
				ret = -EIO;
				goto out_free;
			}
			f = ERR_PTR(-EROFS);
		}
	}
	if (IS_ERR(f)) {
		/* Read-only disk: the write open (or write) was refused. */
		f = filp_open(path, O_RDONLY | O_LARGEFILE, 0);
		if (IS_ERR(f)) {
			scnprintf(out, len, "%s:open=%ld", disk, PTR_ERR(f));
			ret = PTR_ERR(f);
			goto out_free;
		}
		bdev = I_BDEV(f->f_mapping->host);
		pos = 0;
		n = kernel_read(f, back, 16, &pos);
		filp_close(f, NULL);
		if (n != 16) {
			scnprintf(out, len, "%s:ro,read=%zd", disk, n);
			ret = -EIO;
			goto out_free;
		}
		scnprintf(out, len, "%s:ro,sectors=%llu,write=refused,head=%16phN,serial=%s",
			  disk, (unsigned long long)bdev_nr_sectors(bdev), back,
			  serial);
		goto out_free;
	}

	bdev = I_BDEV(f->f_mapping->host);
	oxvm_fill_pattern(buf, disk);
	pos = OXVM_PATTERN_OFF;
	n = kernel_write(f, buf, OXVM_PATTERN_LEN, &pos);
	if (n != OXVM_PATTERN_LEN) {
		scnprintf(out, len, "%s:rw,write=%zd", disk, n);
		ret = -EIO;
		goto out_close;
	}
	err = vfs_fsync(f, 0);
	if (err) {
		scnprintf(out, len, "%s:rw,write=ok,flush=%d", disk, err);
		ret = err;
		goto out_close;
	}
	/* Drop the cached pages so the read below comes from the device. */
	invalidate_mapping_pages(f->f_mapping, 0, -1);
	memset(back, 0, OXVM_PATTERN_LEN);
	pos = OXVM_PATTERN_OFF;
	n = kernel_read(f, back, OXVM_PATTERN_LEN, &pos);
	if (n != OXVM_PATTERN_LEN || memcmp(buf, back, OXVM_PATTERN_LEN)) {
		scnprintf(out, len, "%s:rw,write=ok,flush=ok,verify=mismatch(%zd)",
			  disk, n);
		ret = -EIO;
		goto out_close;
	}
	if (bdev_max_discard_sectors(bdev)) {
		err = blkdev_issue_discard(bdev, OXVM_DISCARD_OFF >> 9,
					   OXVM_DISCARD_LEN >> 9, GFP_KERNEL);
		if (!err)
			err = blkdev_issue_flush(bdev);
		scnprintf(out, len,
			  "%s:rw,sectors=%llu,write=ok,flush=ok,verify=ok,discard=%s%d,serial=%s",
			  disk, (unsigned long long)bdev_nr_sectors(bdev),
			  err ? "err" : "ok", err, serial);
		if (err)
			ret = err;
	} else {
		scnprintf(out, len,
			  "%s:rw,sectors=%llu,write=ok,flush=ok,verify=ok,discard=unsupported,serial=%s",
			  disk, (unsigned long long)bdev_nr_sectors(bdev), serial);
	}
out_close:
	filp_close(f, NULL);
out_free:
	kfree(buf);
	kfree(back);
	return ret;
}

static int __init oxvm_check_disks(const char *prefix, char *details, size_t len)
{
	struct oxvm_disks *d;
	char entry[192];
	size_t used = 0;
	int i, err, ret = 0;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return -ENOMEM;
	d->prefix = prefix;
	class_for_each_device(&block_class, NULL, d, oxvm_collect_disk);
	if (!d->n) {
		scnprintf(details, len, "no-%s-disks", prefix);
		kfree(d);
		return -ENODEV;
	}
	err = init_mkdir("/dev", 0755);
	if (err && err != -EEXIST)
		pr_warn("oxvm selftest: mkdir /dev: %d\n", err);
	err = init_mkdir("/sys", 0755);
	if (!err || err == -EEXIST) {
		err = init_mount("sysfs", "/sys", "sysfs", 0, NULL);
		if (err && err != -EBUSY)
			pr_warn("oxvm selftest: mount sysfs: %d\n", err);
	}
	details[0] = '\0';
	for (i = 0; i < d->n; i++) {
		err = oxvm_check_one(d->names[i], d->devts[i], entry, sizeof(entry));
		if (err && !ret)
			ret = err;
		used += scnprintf(details + used, len - used, "%s%s",
				  used ? " " : "", entry);
	}
	kfree(d);
	return ret;
}

int __init oxvm_check_blk(char *details, size_t len)
{
	return oxvm_check_disks("vd", details, len);
}

int __init oxvm_check_scsi(char *details, size_t len)
{
	return oxvm_check_disks("sd", details, len);
}
