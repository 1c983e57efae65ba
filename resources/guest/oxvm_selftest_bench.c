// SPDX-License-Identifier: GPL-2.0
/*
 * oxvm selftest check `blkbench`: a fixed block workload for benchmarks and
 * for data-integrity tests (save/restore, migration), driven through the
 * block layer (no page cache, no file system).
 *
 * Command line (one or more jobs, separated by ';'):
 *
 *   oxvm.blkbench=<dev>,<bs>,<bytes>[,<mode>][,seed=<n>][,off=<bytes>][;<job>...]
 *
 *   dev    whole disk name, e.g. vda or sda
 *   bs     request size in bytes (k/m suffixes allowed); a multiple of the
 *          disk's logical block size, at most 1 MiB
 *   bytes  bytes per direction; a multiple of bs
 *   mode   rw (default): write the pattern, flush, read it back and verify
 *          write:  write the pattern, flush
 *          read:   read, no verification (any disk content)
 *          verify: read and verify the pattern (e.g. written by an earlier
 *                  boot, or before a snapshot)
 *   seed   pattern seed (default 0)
 *   off    start offset on the disk in bytes (default 0), a multiple of the
 *          logical block size
 *
 * Each `blkbench` named in oxvm.selftest= runs the next job, so
 * `oxvm.selftest=blkbench,blkbench oxvm.blkbench=vda,4k,16m;vda,1m,64m`
 * runs two jobs, each reported on its own line.
 *
 * Requests go one at a time, sequentially from `off`: a bio of bs bytes,
 * submit_bio_wait(), the next one. Writes are REQ_OP_WRITE | REQ_SYNC; the
 * write phase ends with one flush (blkdev_issue_flush, REQ_PREFLUSH), which
 * reaches the device when it has a volatile write cache (VIRTIO_BLK_F_FLUSH).
 * So the guest issues exactly bytes/bs requests per direction; what the
 * driver sent is in the disk's I/O statistics (dev_writes/dev_reads: data
 * requests, which the block layer may have split; dev_flushes: flushes sent
 * to the device, 0 without a volatile write cache).
 *
 * Pattern: with K = 0x9e3779b97f4a7c15 * (seed + 1) (mod 2^64), the 64-bit
 * little-endian word at absolute disk byte offset o (o a multiple of 8) is
 *     o XOR K          when o is a multiple of 512 (the first word of a
 *                      sector: it names the sector),
 *     (o % 512) XOR K  otherwise.
 * So every sector names its own offset and every word depends on the seed:
 * data at the wrong place, stale data (of another request, another seed or
 * never written), zeroes and short transfers are detected, and the host can
 * check an image word by word. (Why not o XOR K in every word: the guest CPU
 * is emulated on PVM hosts, about 30 us per word for a C loop; with this
 * pattern a request costs bs/512 stores plus one `repe cmpsq` to check.)
 * A read buffer still holds the previous request's data, whose sectors name
 * other offsets, so a read that transfers nothing does not pass either.
 *
 * Console lines (OXVM-MARK lines are markers for host-side measurements;
 * they are not check results):
 *
 *   OXVM-MARK blkbench start dev=<d> bs=<n> bytes=<n> mode=<m> seed=<n> off=<n>
 *       just before the first request
 *   OXVM-MARK blkbench write-done write_reqs=<n> write_ns=<ns>
 *       after the write phase's flush completed (modes write and rw)
 *   OXVM-SELFTEST blkbench ok dev=<d> bs=<n> bytes=<n> mode=<m> seed=<n>
 *       off=<n> write_reqs=<n> read_reqs=<n> flushes=<n> write_ns=<ns>
 *       read_ns=<ns> gen_ns=<ns> verify_ns=<ns> dev_writes=<n>
 *       dev_reads=<n> dev_flushes=<n>
 *   OXVM-SELFTEST blkbench fail <reason>
 *
 * Times are guest ktime (ktime_get_ns). write_ns runs from the first write
 * to the completion of the flush and includes gen_ns (filling the buffers
 * with the pattern's sector stamps); read_ns from the first read to the last
 * one's verification and includes verify_ns. The guest CPU is emulated on
 * PVM hosts, so gen/verify are not negligible there.
 *
 * Failure reasons: no-job, bad-job(<text>), no-disk(<dev>), open=<err>,
 * read-only, too-small(<bytes>), misaligned(<lbs>), nomem,
 * write-error(off=<o>,err=<e>), flush-error(<e>), read-error(off=<o>,err=<e>),
 * verify-mismatch(off=<o>,want=<hex>,got=<hex>) where off is the absolute
 * disk byte offset of the first differing 64-bit word.
 */

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/part_stat.h>
#include <linux/printk.h>
#include <linux/string.h>

#include <asm/asm.h>

#include "oxvm_selftest.h"

#define OXVM_BB_ARG_MAX 256
#define OXVM_BB_MAX_BS (1U << 20)
#define OXVM_BB_KEY 0x9e3779b97f4a7c15ULL
#define OXVM_BB_SECTOR 512

enum oxvm_bb_mode { OXVM_BB_RW, OXVM_BB_WRITE, OXVM_BB_READ, OXVM_BB_VERIFY };

static const char *const oxvm_bb_modes[] __initconst = {
	[OXVM_BB_RW] = "rw",
	[OXVM_BB_WRITE] = "write",
	[OXVM_BB_READ] = "read",
	[OXVM_BB_VERIFY] = "verify",
};

struct oxvm_bb_job {
	char dev[32];
	u32 bs;
	u64 bytes;
	u64 off;
	u64 seed;
	enum oxvm_bb_mode mode;
};

/* The value of oxvm.blkbench=; each run of the check takes the next job. */
static char oxvm_bb_arg[OXVM_BB_ARG_MAX] __initdata;
static char *oxvm_bb_cursor __initdata;

static int __init oxvm_bb_setup(char *str)
{
	strscpy(oxvm_bb_arg, str, sizeof(oxvm_bb_arg));
	oxvm_bb_cursor = oxvm_bb_arg;
	return 1;
}
__setup("oxvm.blkbench=", oxvm_bb_setup);

static bool __init oxvm_bb_size(const char *s, u64 *out)
{
	char *end;

	if (!*s)
		return false;
	*out = memparse(s, &end);
	return *end == '\0';
}

/* Parse one job; on failure *bad names the offending token. */
static int __init oxvm_bb_parse(char *text, struct oxvm_bb_job *job,
				const char **bad)
{
	char *tok;
	u64 v;
	int i, n = 0;

	memset(job, 0, sizeof(*job));
	job->mode = OXVM_BB_RW;
	while ((tok = strsep(&text, ",")) != NULL) {
		*bad = tok;
		if (n == 0) {
			if (!*tok || strlen(tok) >= sizeof(job->dev))
				return -EINVAL;
			strscpy(job->dev, tok, sizeof(job->dev));
		} else if (n == 1) {
			if (!oxvm_bb_size(tok, &v) || !v || v > OXVM_BB_MAX_BS)
				return -EINVAL;
			job->bs = v;
		} else if (n == 2) {
			if (!oxvm_bb_size(tok, &job->bytes) || !job->bytes ||
			    job->bytes % job->bs)
				return -EINVAL;
		} else if (!strncmp(tok, "seed=", 5)) {
			if (kstrtou64(tok + 5, 0, &job->seed))
				return -EINVAL;
		} else if (!strncmp(tok, "off=", 4)) {
			if (!oxvm_bb_size(tok + 4, &job->off))
				return -EINVAL;
		} else {
			for (i = 0; i < ARRAY_SIZE(oxvm_bb_modes); i++)
				if (!strcmp(tok, oxvm_bb_modes[i]))
					break;
			if (i == ARRAY_SIZE(oxvm_bb_modes))
				return -EINVAL;
			job->mode = i;
		}
		n++;
	}
	*bad = "missing-fields";
	return n >= 3 ? 0 : -EINVAL;
}

static u64 __init oxvm_bb_key(u64 seed)
{
	return OXVM_BB_KEY * (seed + 1);
}

/* Copy n words with one `rep movsq` (a single emulated instruction). */
static void __init oxvm_bb_copy(u64 *dst, const u64 *src, unsigned long n)
{
	asm volatile("rep movsq"
		     : "+D"(dst), "+S"(src), "+c"(n)
		     : : "memory");
}

/* Index of the first differing word of a and b, or -1 (one `repe cmpsq`). */
static long __init oxvm_bb_cmp(const u64 *a, const u64 *b, unsigned long n)
{
	const u64 *pa = a, *pb = b;
	bool ne;

	if (!n)
		return -1;
	asm volatile("repe cmpsq" CC_SET(ne)
		     : CC_OUT(ne)(ne), "+S"(pa), "+D"(pb), "+c"(n)
		     : : "memory");
	return ne ? (pa - a) - 1 : -1;
}

/* The pattern for a request at disk offset 0 (sector stamps set later). */
static void __init oxvm_bb_template(u64 *w, u32 bs, u64 key)
{
	u32 i, have = OXVM_BB_SECTOR / 8, n = bs / 8;

	for (i = 0; i < have; i++)
		w[i] = (i ? 8 * (u64)i : 0) ^ key;
	/* Double the filled part with rep movsq: log2(bs/512) instructions. */
	while (have < n) {
		u32 c = min(have, n - have);

		oxvm_bb_copy(w + have, w, c);
		have += c;
	}
}

/* Set the first word of each sector to name its disk offset. */
static void __init oxvm_bb_stamp(u64 *w, u64 off, u32 bs, u64 key)
{
	u32 s;

	for (s = 0; s < bs / OXVM_BB_SECTOR; s++)
		w[s * (OXVM_BB_SECTOR / 8)] = (off + s * OXVM_BB_SECTOR) ^ key;
}

static int __init oxvm_bb_io(struct block_device *bdev, blk_opf_t opf,
			     struct page *pages, u64 off, u32 bs)
{
	unsigned int nr = DIV_ROUND_UP(bs, PAGE_SIZE), i;
	struct bio *bio;
	int err;

	bio = bio_alloc(bdev, nr, opf, GFP_KERNEL);
	bio->bi_iter.bi_sector = off >> SECTOR_SHIFT;
	for (i = 0; i < nr; i++) {
		unsigned int len = min_t(u32, PAGE_SIZE, bs - i * PAGE_SIZE);

		if (bio_add_page(bio, pages + i, len, 0) != len) {
			bio_put(bio);
			return -EIO;
		}
	}
	err = submit_bio_wait(bio);
	bio_put(bio);
	return err;
}

struct oxvm_bb_result {
	u64 write_reqs, read_reqs, flushes;
	u64 write_ns, read_ns, gen_ns, verify_ns;
	u64 dev_writes, dev_reads, dev_flushes;
};

/*
 * pat: the pattern (template, stamped per request): written from, and the
 * expected data of a read; rd: the read buffer.
 */
static int __init oxvm_bb_run(const struct oxvm_bb_job *job,
			      struct block_device *bdev, struct page *pat_pages,
			      struct page *rd_pages, struct oxvm_bb_result *r,
			      char *details, size_t len)
{
	u64 *pat = page_address(pat_pages), *rd = page_address(rd_pages);
	u64 key = oxvm_bb_key(job->seed);
	u64 pos, t0, t, n0, f0;
	long bad;
	int err;

	if (job->mode == OXVM_BB_RW || job->mode == OXVM_BB_WRITE) {
		n0 = part_stat_read(bdev, ios[STAT_WRITE]);
		f0 = part_stat_read(bdev, ios[STAT_FLUSH]);
		t0 = ktime_get_ns();
		for (pos = job->off; pos < job->off + job->bytes; pos += job->bs) {
			t = ktime_get_ns();
			oxvm_bb_stamp(pat, pos, job->bs, key);
			r->gen_ns += ktime_get_ns() - t;
			err = oxvm_bb_io(bdev, REQ_OP_WRITE | REQ_SYNC, pat_pages,
					 pos, job->bs);
			if (err) {
				scnprintf(details, len,
					  "write-error(off=%llu,err=%d)", pos, err);
				return err;
			}
			r->write_reqs++;
		}
		/* Before the flush: its empty request counts as a write too. */
		r->dev_writes = part_stat_read(bdev, ios[STAT_WRITE]) - n0;
		err = blkdev_issue_flush(bdev);
		if (err) {
			scnprintf(details, len, "flush-error(%d)", err);
			return err;
		}
		r->flushes++;
		r->write_ns = ktime_get_ns() - t0;
		r->dev_flushes = part_stat_read(bdev, ios[STAT_FLUSH]) - f0;
		pr_info("OXVM-MARK blkbench write-done write_reqs=%llu write_ns=%llu\n",
			r->write_reqs, r->write_ns);
	}
	if (job->mode == OXVM_BB_WRITE)
		return 0;

	n0 = part_stat_read(bdev, ios[STAT_READ]);
	t0 = ktime_get_ns();
	for (pos = job->off; pos < job->off + job->bytes; pos += job->bs) {
		err = oxvm_bb_io(bdev, REQ_OP_READ | REQ_SYNC, rd_pages, pos,
				 job->bs);
		if (err) {
			scnprintf(details, len, "read-error(off=%llu,err=%d)",
				  pos, err);
			return err;
		}
		r->read_reqs++;
		if (job->mode == OXVM_BB_READ)
			continue;
		t = ktime_get_ns();
		oxvm_bb_stamp(pat, pos, job->bs, key);
		bad = oxvm_bb_cmp(pat, rd, job->bs / 8);
		r->verify_ns += ktime_get_ns() - t;
		if (bad >= 0) {
			scnprintf(details, len,
				  "verify-mismatch(off=%llu,want=%016llx,got=%016llx)",
				  pos + 8 * (u64)bad, pat[bad], rd[bad]);
			return -EIO;
		}
	}
	r->read_ns = ktime_get_ns() - t0;
	r->dev_reads = part_stat_read(bdev, ios[STAT_READ]) - n0;
	return 0;
}

int __init oxvm_check_blkbench(char *details, size_t len)
{
	struct oxvm_bb_result r = { 0 };
	struct oxvm_bb_job job;
	struct block_device *bdev;
	struct page *pat = NULL, *rd = NULL;
	const char *bad = "";
	fmode_t fmode = FMODE_READ;
	unsigned int lbs, order;
	char *text;
	dev_t devt;
	int err;

	text = oxvm_bb_cursor ? strsep(&oxvm_bb_cursor, ";") : NULL;
	if (!text || !*text) {
		scnprintf(details, len, "no-job");
		return -EINVAL;
	}
	if (oxvm_bb_parse(text, &job, &bad)) {
		scnprintf(details, len, "bad-job(%s)", bad);
		return -EINVAL;
	}

	devt = blk_lookup_devt(job.dev, 0);
	if (!devt) {
		scnprintf(details, len, "no-disk(%s)", job.dev);
		return -ENODEV;
	}
	if (job.mode == OXVM_BB_RW || job.mode == OXVM_BB_WRITE)
		fmode |= FMODE_WRITE;
	bdev = blkdev_get_by_dev(devt, fmode, NULL);
	if (IS_ERR(bdev)) {
		scnprintf(details, len, "open=%ld", PTR_ERR(bdev));
		return PTR_ERR(bdev);
	}
	lbs = bdev_logical_block_size(bdev);
	err = -EINVAL;
	if ((fmode & FMODE_WRITE) && bdev_read_only(bdev)) {
		scnprintf(details, len, "read-only");
		goto out_put;
	}
	if (job.bs % lbs || job.off % lbs || job.bs % OXVM_BB_SECTOR ||
	    job.off % OXVM_BB_SECTOR) {
		scnprintf(details, len, "misaligned(%u)",
			  max_t(unsigned int, lbs, OXVM_BB_SECTOR));
		goto out_put;
	}
	if (job.off + job.bytes > bdev_nr_bytes(bdev)) {
		scnprintf(details, len, "too-small(%lld)", bdev_nr_bytes(bdev));
		goto out_put;
	}
	/* Physically contiguous, so a request is one segment. */
	order = get_order(job.bs);
	pat = alloc_pages(GFP_KERNEL, order);
	rd = alloc_pages(GFP_KERNEL, order);
	if (!pat || !rd) {
		scnprintf(details, len, "nomem");
		err = -ENOMEM;
		goto out_free;
	}
	oxvm_bb_template(page_address(pat), job.bs, oxvm_bb_key(job.seed));

	pr_info("OXVM-MARK blkbench start dev=%s bs=%u bytes=%llu mode=%s seed=%llu off=%llu\n",
		job.dev, job.bs, job.bytes, oxvm_bb_modes[job.mode], job.seed,
		job.off);
	err = oxvm_bb_run(&job, bdev, pat, rd, &r, details, len);
	if (!err)
		scnprintf(details, len,
			  "dev=%s bs=%u bytes=%llu mode=%s seed=%llu off=%llu write_reqs=%llu read_reqs=%llu flushes=%llu write_ns=%llu read_ns=%llu gen_ns=%llu verify_ns=%llu dev_writes=%llu dev_reads=%llu dev_flushes=%llu",
			  job.dev, job.bs, job.bytes, oxvm_bb_modes[job.mode],
			  job.seed, job.off, r.write_reqs, r.read_reqs,
			  r.flushes, r.write_ns, r.read_ns, r.gen_ns,
			  r.verify_ns, r.dev_writes, r.dev_reads,
			  r.dev_flushes);
out_free:
	if (pat)
		__free_pages(pat, order);
	if (rd)
		__free_pages(rd, order);
out_put:
	blkdev_put(bdev, fmode);
	return err;
}
