//! Writing VM files and running `oxvm run` on them with console capture.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmm_sys_util::tempdir::TempDir;

pub fn oxvm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_oxvm")
}

/// A scratch directory that holds a VM's files; removed when dropped.
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: TempDir::new_with_prefix("/tmp/oxvm-test-").expect("temp dir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.as_path()
    }
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }
    pub fn write_json(&self, name: &str, v: &Value) -> PathBuf {
        self.write(name, serde_json::to_string_pretty(v).unwrap().as_bytes())
    }
}

/// Load address of raw test payloads (1 MiB).
pub const RAW_LOAD: u64 = 0x10_0000;

/// A VM file for a raw payload `code.bin` in `scratch`. Small guests have no ACPI
/// driver, so a graceful shutdown (SIGTERM) always runs into its timeout: keep it at
/// one second unless `extra` says otherwise.
pub fn raw_vm(scratch: &Scratch, code: &[u8], vcpus: u32, extra: Value) -> PathBuf {
    scratch.write("code.bin", code);
    let mut v = json!({
        "name": "smallguest",
        "vcpus": vcpus,
        "memory_mib": 32,
        "boot": { "raw": { "path": "code.bin", "load_address": RAW_LOAD } },
        "serial": { "mode": "stdout" },
        "shutdown": { "timeout_s": 1 }
    });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    scratch.write_json("vm.json", &v)
}

/// Captured output of one stream, with a condition variable to wait on.
#[derive(Clone, Default)]
pub struct Capture(Arc<(Mutex<Stream>, Condvar)>);

#[derive(Default)]
pub struct Stream {
    bytes: Vec<u8>,
    eof: bool,
}

impl Capture {
    fn spawn_reader(mut r: impl Read + Send + 'static) -> Capture {
        let c = Capture::default();
        let c2 = c.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = r.read(&mut buf).unwrap_or(0);
                let (m, cv) = &*c2.0;
                let mut s = m.lock().unwrap();
                if n == 0 {
                    s.eof = true;
                } else {
                    s.bytes.extend_from_slice(&buf[..n]);
                }
                cv.notify_all();
                if n == 0 {
                    break;
                }
            }
        });
        c
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0 .0.lock().unwrap().bytes.clone()
    }

    /// Wait until `pred` holds for the text so far (true), or until the stream ends or
    /// `timeout` passes without it (false).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut s = m.lock().unwrap();
        loop {
            if pred(&String::from_utf8_lossy(&s.bytes)) {
                return true;
            }
            let now = Instant::now();
            if s.eof || now >= deadline {
                return false;
            }
            s = cv.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Wait for the end of the stream (the writer closed it).
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut s = m.lock().unwrap();
        while !s.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = cv.wait_timeout(s, deadline - now).unwrap().0;
        }
        true
    }
}

/// A running `oxvm run` process.
pub struct RunningVm {
    pub child: Child,
    pub stdout: Capture,
    pub stderr: Capture,
}

impl RunningVm {
    pub fn start(vm_file: &Path) -> RunningVm {
        Self::start_with(Command::new(oxvm_bin()).arg("run").arg(vm_file))
    }

    /// Start with a prepared command (e.g. under `nice`); output is captured.
    pub fn start_with(cmd: &mut Command) -> RunningVm {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn oxvm");
        let stdout = Capture::spawn_reader(child.stdout.take().unwrap());
        let stderr = Capture::spawn_reader(child.stderr.take().unwrap());
        RunningVm {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to end; kills it and panics with its output after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Let the readers reach EOF so the captured text is complete.
                self.stdout.wait_eof(Duration::from_secs(5));
                self.stderr.wait_eof(Duration::from_secs(5));
                return st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "oxvm did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout.text(),
                    self.stderr.text()
                );
            }
            // Polling the child's status: there is no portable blocking wait with a
            // deadline on std::process::Child. This waits for an event, it hides none.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for console text; panics with all output on timeout.
    pub fn expect_stdout(&self, timeout: Duration, pred: impl Fn(&str) -> bool, what: &str) {
        if !self.stdout.wait_until(timeout, pred) {
            panic!(
                "timed out waiting for {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout.text(),
                self.stderr.text()
            );
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Names (`comm`) of all threads of the process.
    pub fn thread_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) {
            for t in dir.flatten() {
                if let Ok(n) = std::fs::read_to_string(t.path().join("comm")) {
                    names.push(n.trim().to_string());
                }
            }
        }
        names.sort();
        names
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `oxvm run vm_file` to completion; returns (status, stdout, stderr).
pub fn run_to_end(vm_file: &Path, timeout: Duration) -> (ExitStatus, String, String) {
    let mut vm = RunningVm::start(vm_file);
    let st = vm.wait(timeout);
    (st, vm.stdout.text(), vm.stderr.text())
}

/// Run `oxvm run vm_file` on a VM that must be refused: exit status 1, no guest output,
/// and quickly (nothing was started). Returns stderr.
pub fn run_refused(vm_file: &Path) -> String {
    let start = Instant::now();
    let out = Command::new(oxvm_bin())
        .arg("run")
        .arg(vm_file)
        .output()
        .expect("run oxvm");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "guest output from a refused VM: {out:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
