// SPDX-License-Identifier: GPL-2.0
/*
 * oxvm selftest check `net`: UDP echo through the virtio-net NIC.
 *
 * The interface is configured by the kernel itself from the `ip=` command-line
 * parameter (CONFIG_IP_PNP runs before this check). The check sends datagrams
 * of several sizes from a kernel UDP socket to oxvm.net=<host-ip>:<port> and
 * expects each to come back unchanged (the host side of the test runs an
 * echo server on the tap's address).
 *
 * Details: mac=<guest MAC> ip=<guest IPv4> echoed=<n>/<n> bytes=<total>
 */

#include <linux/in.h>
#include <linux/inet.h>
#include <linux/inetdevice.h>
#include <linux/net.h>
#include <linux/netdevice.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <net/net_namespace.h>
#include <net/sock.h>

#include "oxvm_selftest.h"

const char *oxvm_net_target;
static char oxvm_net_arg[64];

static int __init oxvm_net_setup(char *str)
{
	strscpy(oxvm_net_arg, str, sizeof(oxvm_net_arg));
	oxvm_net_target = oxvm_net_arg;
	return 1;
}
__setup("oxvm.net=", oxvm_net_setup);

static const int oxvm_sizes[] = { 16, 100, 512, 1000, 1400, 64, 1472, 8 };
#define OXVM_ROUNDS ARRAY_SIZE(oxvm_sizes)
#define OXVM_TRIES 10

/* One round trip: send `len` bytes, wait for the same bytes back. */
static int __init oxvm_echo(struct socket *sock, struct sockaddr_in *to, u8 *out,
		     u8 *in, int len)
{
	struct msghdr msg = { };
	struct kvec iov;
	int n, try;

	for (try = 0; try < OXVM_TRIES; try++) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_name = to;
		msg.msg_namelen = sizeof(*to);
		iov.iov_base = out;
		iov.iov_len = len;
		n = kernel_sendmsg(sock, &msg, &iov, 1, len);
		if (n != len)
			continue;
		memset(&msg, 0, sizeof(msg));
		iov.iov_base = in;
		iov.iov_len = len + 64;
		n = kernel_recvmsg(sock, &msg, &iov, 1, len + 64, 0);
		/* A timeout (-EAGAIN) or a stale reply: try again. */
		if (n == len && !memcmp(in, out, len))
			return 0;
	}
	return -ETIMEDOUT;
}

int __init oxvm_check_net(char *details, size_t len)
{
	struct sockaddr_in to = { .sin_family = AF_INET };
	struct net_device *dev;
	struct in_device *idev;
	struct socket *sock;
	char host[32], *colon;
	unsigned int port;
	__be32 ip = 0;
	u8 mac[ETH_ALEN];
	u8 *out, *in;
	int i, j, err, ok = 0, bytes = 0;

	if (!oxvm_net_target) {
		scnprintf(details, len, "no-oxvm.net-parameter");
		return -EINVAL;
	}
	strscpy(host, oxvm_net_target, sizeof(host));
	colon = strchr(host, ':');
	if (!colon || kstrtouint(colon + 1, 10, &port) || port > 65535) {
		scnprintf(details, len, "bad-oxvm.net=%s", oxvm_net_target);
		return -EINVAL;
	}
	*colon = '\0';
	if (!in4_pton(host, -1, (u8 *)&to.sin_addr.s_addr, -1, NULL)) {
		scnprintf(details, len, "bad-host=%s", host);
		return -EINVAL;
	}
	to.sin_port = htons(port);

	dev = dev_get_by_name(&init_net, "eth0");
	if (!dev) {
		scnprintf(details, len, "no-eth0");
		return -ENODEV;
	}
	memcpy(mac, dev->dev_addr, ETH_ALEN);
	rcu_read_lock();
	idev = __in_dev_get_rcu(dev);
	if (idev && idev->ifa_list)
		ip = rcu_dereference(idev->ifa_list)->ifa_local;
	rcu_read_unlock();
	dev_put(dev);

	err = sock_create_kern(&init_net, AF_INET, SOCK_DGRAM, IPPROTO_UDP, &sock);
	if (err) {
		scnprintf(details, len, "socket=%d", err);
		return err;
	}
	sock->sk->sk_rcvtimeo = 2 * HZ;
	out = kmalloc(2048, GFP_KERNEL);
	in = kmalloc(2048, GFP_KERNEL);
	if (!out || !in) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < OXVM_ROUNDS; i++) {
		for (j = 0; j < oxvm_sizes[i]; j++)
			out[j] = (u8)(i * 31 + j);
		memcpy(out, "OXVM", min(4, oxvm_sizes[i]));
		if (!oxvm_echo(sock, &to, out, in, oxvm_sizes[i])) {
			ok++;
			bytes += oxvm_sizes[i];
		}
	}
	err = ok == OXVM_ROUNDS ? 0 : -EIO;
out:
	kfree(out);
	kfree(in);
	sock_release(sock);
	scnprintf(details, len, "mac=%pM ip=%pI4 echoed=%d/%d bytes=%d",
		  mac, &ip, ok, (int)OXVM_ROUNDS, bytes);
	return err;
}
