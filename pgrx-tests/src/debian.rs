//! Debian's own PostgreSQL 18 (sid), run in the minimal root that `scripts/debian-roots` builds
//! (`$ESP_ROOT/debian/base`), serving real extension images cut from Debian's packages
//! (`$ESP_ROOT/debian/images/`), mounted the way CloudNativePG mounts image volumes.
//!
//! Sid's binaries need a newer libc than the host's, so the server runs chrooted in the root;
//! clients are the host's `psql`, through a socket directory inside the root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{esp_root, next_port, pg_bin, repo, run, run_with_input, umoci_unpack};

/// Debian's PostgreSQL 18 programs, inside the root.
const PG_BIN: &str = "/usr/lib/postgresql/18/bin";

/// The root with Debian's PostgreSQL 18. Fails the test when it is missing.
pub fn base() -> PathBuf {
    let base = esp_root().join("debian/base");
    assert!(
        base.join("usr/lib/postgresql/18/bin/postgres").exists(),
        "{} is missing: run scripts/debian-roots (scripts/bootstrap does)",
        base.display()
    );
    base
}

/// An image cut by `scripts/debian-roots`: `postgis`, `pgrouting` (flat) or `geospatial`
/// (one subdirectory per extension).
pub fn image(name: &str) -> PathBuf {
    let dir = esp_root().join("debian/images").join(name);
    assert!(dir.is_dir(), "{} is missing: run scripts/debian-roots (scripts/bootstrap does)", dir.display());
    dir
}

/// This extension's image, as CloudNativePG gets it: `scripts/package` builds the OCI image,
/// umoci unpacks it under `root`. Mount it as `extension_search_path` with [`EXTENSION_SETTINGS`].
pub fn extension_image(root: &Path) -> PathBuf {
    let pkg = root.join("pkg");
    run(Command::new(repo().join("scripts/package")).arg(&pkg)).unwrap_or_else(|e| panic!("scripts/package: {e}"));
    let version = fs::read_dir(pkg.join("extension_search_path/share/extension"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            e.file_name().to_str()?.strip_prefix("extension_search_path--")?.strip_suffix(".sql").map(String::from)
        })
        .expect("no install script in the package");
    let rootfs = root.join("unpacked/extension_search_path");
    umoci_unpack(&pkg.join("oci"), &version, &rootfs);
    rootfs
}

/// What CloudNativePG writes for the one image that must load before anything else: ours,
/// mounted at `/extensions/extension_search_path`.
pub const EXTENSION_SETTINGS: [&str; 3] = [
    "shared_preload_libraries = 'extension_search_path'",
    "dynamic_library_path = '/extensions/extension_search_path/lib:$libdir'",
    "extension_control_path = '/extensions/extension_search_path/share:$system'",
];

/// `s` quoted for sh.
fn sh(s: impl AsRef<std::ffi::OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

/// A command with the environment a service would see: none of cargo's variables, no
/// `LD_LIBRARY_PATH`.
fn clean(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd
}

/// `chroot base() runuser -u postgres -- <Debian's program> args`.
fn as_postgres(program: &str, args: &[&str]) -> Command {
    let mut cmd = clean("chroot");
    cmd.arg(base()).args(["runuser", "-u", "postgres", "--"]).arg(Path::new(PG_BIN).join(program)).args(args);
    cmd
}

/// Debian's PostgreSQL 18 in `base()`, with a data directory, port and socket directory of its
/// own under `base()/tmp/esp-*` (removed on drop). Each mounted image is bind-mounted read-only
/// at `/extensions/<name>` in a private mount namespace that the postmaster keeps: nothing is
/// mounted in the host's namespace, and the mounts vanish with the server.
pub struct DebianServer {
    /// `base()/tmp/esp-*`: `data/`, `sock/`, `server.log`.
    dir: tempfile::TempDir,
    /// The same directory inside the root.
    inside: PathBuf,
    pub port: u16,
    /// The socket directory, as the host sees it.
    pub sock: PathBuf,
    /// `(name, host directory)` mounted at `/extensions/<name>` at each start.
    mounts: Vec<(String, PathBuf)>,
    running: bool,
}

impl DebianServer {
    /// Debian's initdb, then `settings` appended to postgresql.conf. Not started.
    pub fn new(settings: &[&str]) -> DebianServer {
        let base = base();
        let dir = tempfile::Builder::new().prefix("esp-").tempdir_in(base.join("tmp")).unwrap();
        let inside = Path::new("/").join(dir.path().strip_prefix(&base).unwrap());
        fs::create_dir(dir.path().join("sock")).unwrap();
        // the root's postgres user, whose uid need not be the host's
        run(clean("chroot").arg(&base).args(["chown", "-R", "postgres:postgres"]).arg(&inside)).unwrap();
        let initdb = ["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "-D"];
        run(as_postgres("initdb", &initdb).arg(inside.join("data"))).unwrap_or_else(|e| panic!("Debian's initdb: {e}"));
        let port = next_port();
        let server =
            DebianServer { sock: dir.path().join("sock"), dir, inside, port, mounts: Vec::new(), running: false };
        let mut conf = format!(
            "port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n",
            server.inside.join("sock").display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        server.append_conf(&conf);
        server
    }

    /// Mounts `source` read-only at `/extensions/<name>` from the next start on.
    pub fn mount(&mut self, name: &str, source: &Path) {
        self.mounts.push((name.to_string(), source.to_path_buf()));
    }

    pub fn append_conf(&self, text: &str) {
        let path = self.dir.path().join("data/postgresql.conf");
        let mut conf = fs::read_to_string(&path).unwrap();
        conf.push_str(text);
        conf.push('\n');
        fs::write(path, conf).unwrap();
    }

    pub fn start(&mut self) {
        self.try_start().unwrap_or_else(|e| panic!("Debian's server did not start: {e}\n{}", self.log()));
    }

    /// Starts the server in a new private mount namespace: /proc, /dev/shm (a tmpfs, as in a
    /// container), a tmpfs at /extensions (so that no mount point is left in the root), each
    /// image bind-mounted read-only on it.
    pub fn try_start(&mut self) -> Result<(), String> {
        let base = base();
        let ext = base.join("extensions");
        let mut script = format!(
            "set -e\nmount -t proc proc {}\nmount -t tmpfs -o mode=1777 shm {}\nmount -t tmpfs -o mode=755 extensions {}\n",
            sh(base.join("proc")),
            sh(base.join("dev/shm")),
            sh(&ext)
        );
        for (name, source) in &self.mounts {
            let target = sh(ext.join(name));
            script.push_str(&format!(
                "mkdir {target}\nmount --bind {} {target}\nmount -o remount,bind,ro {target}\n",
                sh(source)
            ));
        }
        script.push_str(&format!(
            "exec chroot {} runuser -u postgres -- {PG_BIN}/pg_ctl -w -t 60 -D {} -l {} start\n",
            sh(&base),
            sh(self.inside.join("data")),
            sh(self.inside.join("server.log"))
        ));
        run(clean("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]))?;
        self.running = true;
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = run(as_postgres("pg_ctl", &["-w", "-m", "fast", "-D"]).arg(self.inside.join("data")).arg("stop"));
            self.running = false;
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Runs `sql` in a new session (the host's psql through the socket directory); statements
    /// run one by one, stopping at the first error. Unaligned, tuples-only output, or the error.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(pg_bin().join("psql"));
        cmd.arg("-h").arg(&self.sock).arg("-p").arg(self.port.to_string());
        cmd.args(["-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        run_with_input(&mut cmd, sql)
    }

    pub fn sql(&self, sql: &str) -> String {
        crate::answer(self.try_sql(sql), sql, || self.log())
    }

    /// The error of `sql`, which must fail.
    pub fn sql_err(&self, sql: &str) -> String {
        crate::refusal(self.try_sql(sql), sql)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Fails the test if any server process crashed.
    pub fn assert_no_crash(&self) {
        crate::assert_no_crash_in(&self.log());
    }
}

impl Drop for DebianServer {
    fn drop(&mut self) {
        // also after a start that timed out or a stop that failed: never leave a server behind
        // (the data directory is removed with `dir` right after)
        if self.running || self.dir.path().join("data/postmaster.pid").exists() {
            let _ =
                run(as_postgres("pg_ctl", &["-w", "-m", "immediate", "-D"]).arg(self.inside.join("data")).arg("stop"));
        }
    }
}
