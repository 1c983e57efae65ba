//! A private network namespace with a tap and a UDP echo server, so a guest NIC test
//! touches nothing outside the namespace.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `ip` (iproute2) or panic with its output.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct NetNs {
    pub name: String,
    echo: Option<Child>,
}

impl NetNs {
    /// A fresh namespace `name` (a leftover of an earlier run is removed) with `lo` up.
    fn empty(name: &str) -> NetNs {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        NetNs {
            name: name.to_string(),
            echo: None,
        }
    }

    /// A namespace `name` holding tap `tap` with `host_ip`/24, up.
    pub fn with_tap(name: &str, tap: &str, host_ip: &str) -> NetNs {
        let ns = NetNs::empty(name);
        ip(&[
            "-n", name, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr",
        ]);
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            tap,
        ]);
        ip(&["-n", name, "link", "set", tap, "up"]);
        ns
    }

    /// A namespace `name` with a bridge holding `host_ip`/24 and the taps `taps` on it
    /// (two processes on one host each need their own tap for the same guest NIC: a
    /// live migration's source and destination).
    pub fn with_bridge(name: &str, taps: &[&str], host_ip: &str) -> NetNs {
        let ns = NetNs::empty(name);
        ip(&["-n", name, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", name, "link", "set", "br0", "up"]);
        for tap in taps {
            ip(&[
                "-n", name, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr",
            ]);
            ip(&["-n", name, "link", "set", tap, "master", "br0"]);
            ip(&["-n", name, "link", "set", tap, "up"]);
        }
        ns
    }

    /// Start a UDP echo server on `ip:port` inside the namespace; returns once it is
    /// bound. It prints one line per datagram: `<source-ip> <length>`.
    pub fn start_echo(&mut self, ip: &str, port: u16) -> std::sync::mpsc::Receiver<String> {
        let script = format!(
            "import socket,sys\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('{ip}',{port}))\n\
             print('ready',flush=True)\n\
             while True:\n\
             \x20   d,a=s.recvfrom(65535)\n\
             \x20   s.sendto(d,a)\n\
             \x20   print(a[0],len(d),flush=True)\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start echo server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("echo server did not start");
        assert_eq!(first, "ready");
        self.echo = Some(child);
        rx
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Read a file of the namespace's sysfs (e.g. a tap's statistics).
    pub fn read_sys(&self, path: &str) -> String {
        let out = self.command("cat").arg(path).output().expect("cat");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Some(mut c) = self.echo.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
