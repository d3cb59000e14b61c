//! The end-to-end harness: real PostgreSQL 18 servers started as `postgres` on private ports and
//! socket directories, against the installed extension and real extensions laid out as images by
//! `scripts/mkimage`. Every `psql` call is a new connection, so a new backend.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub mod debian;

/// The repository's root (for scripts/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn esp_root() -> PathBuf {
    PathBuf::from(std::env::var("ESP_ROOT").unwrap_or_else(|_| "/opt/esp".into()))
}

pub fn pg_bin() -> PathBuf {
    std::env::var("ESP_PG_PREFIX").map(PathBuf::from).unwrap_or_else(|_| esp_root().join("pgsql-18")).join("bin")
}

fn run(cmd: &mut Command) -> Result<String, String> {
    run_with_input(cmd, "")
}

/// Runs `cmd` (killed after the command timeout); its stdout, or stderr and stdout on failure.
pub fn run_command(cmd: &mut Command) -> Result<String, String> {
    run(cmd)
}

/// How long one command (a psql call, pg_ctl, a build step) may take before it is killed and
/// the test fails: `ESP_E2E_TIMEOUT` seconds, 300 by default. A hang fails the test instead of
/// stalling CI.
fn command_timeout() -> Duration {
    let seconds = std::env::var("ESP_E2E_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    Duration::from_secs(seconds)
}

fn run_with_input(cmd: &mut Command, input: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // its own process group, so that a timeout kills what it started too (runuser, sh)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    // Each pipe is read by a thread that sends what it read when the pipe closes.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = tx.send(bytes);
        });
        rx
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + command_timeout();
    let kill_group = |child: &mut std::process::Child| {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
        let _ = child.kill();
        let _ = child.wait();
    };
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let _ = writer.join();
    // What the pipes held, waiting no longer than the deadline (a descendant that left the
    // group may keep them open).
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        String::from_utf8_lossy(&rx.recv_timeout(left).unwrap_or_default()).into_owned()
    };
    let stdout = collect(stdout).trim_end().to_string();
    let stderr = collect(stderr);
    let Some(status) = status else {
        return Err(format!("{cmd:?}: no answer within {:?}: killed\n{stderr}{stdout}", command_timeout()));
    };
    if status.success() { Ok(stdout) } else { Err(format!("{stderr}{stdout}")) }
}

/// `program` run as postgres. Variables that cargo sets for its test binaries (the loader's
/// search path among them) are not passed on: a server sees the environment a service would.
fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd
}

/// `s` with the catalog generation (`/gen-<n>`) left out of every path.
pub fn without_generation(s: &str) -> String {
    let generation = |seg: &str| seg.strip_prefix("gen-").is_some_and(|n| n.parse::<u64>().is_ok());
    s.split('/').filter(|seg| !generation(seg)).collect::<Vec<_>>().join("/")
}

/// Pure-SQL images (CloudNativePG layout) named `names` under `prefix`, readable by the server.
pub fn sql_images(prefix: &Path, names: impl IntoIterator<Item = String>) {
    for name in names {
        let dir = prefix.join(format!("{name}/share/extension"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{name}.control")), "default_version = '1.0'\nrelocatable = true\n").unwrap();
        fs::write(dir.join(format!("{name}--1.0.sql")), "SELECT 1;\n").unwrap();
    }
    run_chmod_readable(prefix);
}

/// `text` as an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A world-readable temporary directory (the server runs as `postgres`).
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("esp-e2e-").tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Makes everything under `dir` readable by the server (`chmod -R a+rX`).
pub fn run_chmod_readable(dir: &Path) {
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(dir)).unwrap();
}

/// Lays `source` out as `<prefix>/<dir>` in `layout` (`cnpg` or `rfc`) with scripts/mkimage.
pub fn mkimage(layout: &str, source: &str, out: &Path) {
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    run(Command::new(repo().join("scripts/mkimage")).args([layout, source]).arg(out))
        .unwrap_or_else(|e| panic!("mkimage {layout} {source}: {e}"));
}

/// Builds an OCI image of the image directory `dir` with scripts/oci-image (buildah) into the
/// OCI layout `oci` under `tag`; returns the layer digest.
pub fn oci_image(dir: &Path, tag: &str, oci: &Path) -> String {
    run(Command::new(repo().join("scripts/oci-image")).arg(dir).arg(format!("test-image:{tag}")).arg(oci))
        .unwrap_or_else(|e| panic!("oci-image {}: {e}", dir.display()))
}

/// Unpacks the image tagged `tag` of the OCI layout `oci` into `rootfs` with umoci, as a
/// kubelet's image volume would present it.
pub fn umoci_unpack(oci: &Path, tag: &str, rootfs: &Path) {
    fs::create_dir_all(rootfs.parent().unwrap()).unwrap();
    run(Command::new("umoci")
        .args(["raw", "unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", oci.display()))
        .arg(rootfs))
    .unwrap_or_else(|e| panic!("umoci unpack {}: {e}", oci.display()));
    run_chmod_readable(rootfs);
}

/// The Debian package file of `package` that scripts/bootstrap downloaded.
pub fn deb(package: &str) -> String {
    let dir = esp_root().join("debs");
    let file = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&format!("{package}_")))
        .unwrap_or_else(|| panic!("{package} not in {} (run scripts/bootstrap)", dir.display()));
    format!("deb:{}", file.path().display())
}

/// Image prefixes shared by the tests, built once per test process:
///
/// * `cnpg/`: hstore, earthdistance (needs cube), seg, jsquery (Debian) — CloudNativePG layout
/// * `rfc/`:  cube, citext, pgfincore (Debian) — RFC layout
/// * `early/`: an RFC hstore whose default version is 1.4, to shadow `cnpg/hstore`
/// * `operator/`: an image (isn) that only the operator's own core settings name
pub struct Fixtures {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Fixtures {
    pub fn prefix(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = tempdir();
        let root = dir.path().to_path_buf();
        for (layout, source, out) in [
            ("cnpg", "contrib:hstore".to_string(), "cnpg/hstore"),
            ("cnpg", "contrib:earthdistance".to_string(), "cnpg/earthdistance"),
            ("cnpg", "contrib:seg".to_string(), "cnpg/seg"),
            ("cnpg", deb("postgresql-18-jsquery"), "cnpg/jsquery"),
            ("rfc", "contrib:cube".to_string(), "rfc/cube"),
            ("rfc", "contrib:citext".to_string(), "rfc/citext"),
            ("rfc", deb("postgresql-18-pgfincore"), "rfc/pgfincore"),
            ("rfc", "contrib:hstore".to_string(), "early/hstore"),
            ("cnpg", "contrib:isn".to_string(), "operator/isn"),
        ] {
            mkimage(layout, &source, &root.join(out));
        }
        let control = root.join("early/hstore/hstore.control");
        let text = fs::read_to_string(&control).unwrap().replace("default_version = '1.8'", "default_version = '1.4'");
        fs::write(control, text).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        Fixtures { _dir: dir, root }
    })
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port of this test process's own (each server also has its own socket directory).
fn next_port() -> u16 {
    let base = 20000 + (std::process::id() % 2000) as u16 * 10;
    base + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 10
}

/// A PostgreSQL 18 server of its own: data directory, port, socket directory.
pub struct Server {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
    running: bool,
    /// Variables set in the postmaster's environment at start (inherited by every backend).
    env: Vec<(String, String)>,
    /// The socket directory (outside the data directory: tools that copy a data directory
    /// would trip over the socket).
    pub sock: PathBuf,
}

/// A socket directory beside `data`, for the postgres user.
fn socket_dir(data: &Path) -> PathBuf {
    let sock = data.with_file_name("sock");
    fs::create_dir_all(&sock).unwrap();
    run(Command::new("chown").arg("postgres").arg(&sock)).unwrap();
    sock
}

impl Server {
    /// initdb, then `settings` appended to postgresql.conf. Not started.
    pub fn new(settings: &[&str]) -> Server {
        let dir = tempdir();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        run(Command::new("chown").arg("postgres").arg(&data)).unwrap();
        run(as_postgres(&pg_bin().join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data))
        .unwrap_or_else(|e| panic!("initdb: {e}"));
        let port = next_port();
        let sock = socket_dir(&data);
        let server = Server { _dir: dir, data, port, running: false, env: Vec::new(), sock };
        let mut conf = format!(
            "port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n",
            server.sock.display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        server.append_conf(&conf);
        server
    }

    /// A standby of `self`: `pg_basebackup -R` (as postgres) into a new data directory with a port
    /// and socket directory of its own. Not started. Returns it with what pg_basebackup printed.
    pub fn standby(&self) -> (Server, String) {
        let dir = tempdir();
        let data = dir.path().join("data");
        run(Command::new("chown").arg("postgres").arg(dir.path())).unwrap();
        let (host, port) = (self.sock.display().to_string(), self.port.to_string());
        let out = self
            .tool(
                "pg_basebackup",
                &[
                    "-R",
                    "--no-sync",
                    "-X",
                    "stream",
                    "-h",
                    &host,
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-D",
                    &data.display().to_string(),
                ],
            )
            .unwrap_or_else(|e| panic!("pg_basebackup: {e}"));
        let port = self.port + 100;
        let sock = socket_dir(&data);
        let server = Server { _dir: dir, data, port, running: false, env: Vec::new(), sock };
        server.append_conf(&format!("port = {port}\nunix_socket_directories = '{}'\n", server.sock.display()));
        (server, out)
    }

    /// Runs a PostgreSQL program of the install as postgres; its output (stdout and stderr).
    pub fn tool(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let cmd = format!(
            "'{}' {} 2>&1",
            pg_bin().join(program).display(),
            args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")
        );
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "sh", "-c", &cmd]);
        run(&mut command)
    }

    /// A server that preloads extension_search_path with `path`, plus `settings`.
    pub fn with_path(path: &str, settings: &[&str]) -> Server {
        let mut all = vec![
            "shared_preload_libraries = 'extension_search_path'".to_string(),
            format!("extension_search_path.path = '{path}'"),
        ];
        all.extend(settings.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut server = Server::new(&all);
        server.start();
        server
    }

    pub fn append_conf(&self, text: &str) {
        let path = self.data.join("postgresql.conf");
        let mut conf = fs::read_to_string(&path).unwrap();
        conf.push_str(text);
        conf.push('\n');
        fs::write(path, conf).unwrap();
    }

    pub fn start(&mut self) {
        self.try_start().unwrap_or_else(|e| panic!("server did not start: {e}\n{}", self.log()));
    }

    /// Sets `name` = `value` in the server's environment from its next start on.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_string(), value.to_string()));
    }

    pub fn try_start(&mut self) -> Result<(), String> {
        let log = self.data.join("server.log");
        run(as_postgres(&pg_bin().join("pg_ctl"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .arg("start"))?;
        self.running = true;
        Ok(())
    }

    /// Starts the server inside a new mount namespace in which each `(source, target)` is
    /// bind-mounted read-only, as Kubernetes mounts image volumes. The postmaster keeps the
    /// namespace; clients connect through the socket as usual.
    pub fn start_with_read_only_mounts(&mut self, mounts: &[(&Path, &Path)]) {
        let mut script = String::new();
        for (source, target) in mounts {
            fs::create_dir_all(target).unwrap();
            script.push_str(&format!(
                "mount --bind '{0}' '{1}' && mount -o remount,bind,ro '{1}' && ",
                source.display(),
                target.display()
            ));
        }
        script.push_str(&format!(
            "runuser -u postgres -- '{}' -w -t 60 -D '{}' -l '{}' start",
            pg_bin().join("pg_ctl").display(),
            self.data.display(),
            self.data.join("server.log").display()
        ));
        run(Command::new("unshare")
            .env_remove("LD_LIBRARY_PATH")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["-m", "--propagation", "private", "sh", "-c", &script]))
        .unwrap_or_else(|e| panic!("server did not start in its namespace: {e}\n{}", self.log()));
        self.running = true;
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ =
                run(as_postgres(&pg_bin().join("pg_ctl")).args(["-w", "-m", "fast", "-D"]).arg(&self.data).arg("stop"));
            self.running = false;
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// pg_reload_conf(), then waits until a new backend sees `setting` = `value`.
    pub fn reload_until(&self, setting: &str, value: &str) {
        self.sql("SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(10);
        // a backend forked before the postmaster applied the reload may not know the setting yet
        while self.try_sql(&format!("SHOW {setting}")).as_deref() != Ok(value) {
            assert!(Instant::now() < deadline, "{setting} never became {value}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pg_reload_conf()`, then waits until the reload is applied: the postmaster has run its
    /// reload (our assign hooks included) and new backends see the new configuration.
    pub fn reload(&self) {
        static MARK: AtomicU16 = AtomicU16::new(0);
        let mark = MARK.fetch_add(1, Ordering::Relaxed).to_string();
        self.sql(&format!("ALTER SYSTEM SET esp_e2e.reload_mark = '{mark}'"));
        self.reload_until("esp_e2e.reload_mark", &mark);
    }

    /// Runs `sql` in new sessions until `done` accepts its output (30 s at most); the output.
    pub fn wait_for(&self, sql: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.try_sql(sql);
            if let Ok(out) = &out
                && done(out)
            {
                return out.clone();
            }
            assert!(Instant::now() < deadline, "{sql}: never as expected; last: {out:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A statement that waits until [`Server::go`] is called (made ready by [`Server::hold_until_go`]):
    /// a session held at a point the test chooses, with no timing involved.
    pub const WAIT_FOR_GO: &'static str =
        "DO $$ BEGIN LOOP EXIT WHEN EXISTS (SELECT FROM esp_go); PERFORM pg_sleep(0.02); END LOOP; END $$";

    /// Prepares [`Server::WAIT_FOR_GO`].
    pub fn hold_until_go(&self) {
        self.sql("DROP TABLE IF EXISTS esp_go; CREATE TABLE esp_go(); GRANT SELECT ON esp_go TO PUBLIC");
    }

    /// Releases the sessions waiting in [`Server::WAIT_FOR_GO`].
    pub fn go(&self) {
        self.sql("INSERT INTO esp_go DEFAULT VALUES");
    }

    /// Waits until another session is running a statement containing `text`.
    pub fn wait_active(&self, text: &str) {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() \
             AND position({} in query) > 0",
            quote_literal(text)
        );
        self.wait_for(&sql, |n| n != "0" && !n.is_empty());
    }

    /// Runs `sql` in a new session (a new backend); statements run one by one, stopping at the
    /// first error. Returns unaligned, tuples-only output, or the error text.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.try_sql_as("postgres", sql)
    }

    /// `try_sql` in a new session of role `user`.
    pub fn try_sql_as(&self, user: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(pg_bin().join("psql"));
        cmd.arg("-h").arg(&self.sock).arg("-p").arg(self.port.to_string());
        cmd.args(["-U", user, "-d", "postgres", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        run_with_input(&mut cmd, sql)
    }

    /// Runs `script` through psql as a regression test would (echoing each statement, going on
    /// after errors, stdout and stderr interleaved in one stream) and returns all it printed.
    pub fn psql_script(&self, script: &str) -> String {
        let psql = format!(
            "'{}' -h '{}' -p {} -U postgres -d postgres -X -a -q -f - 2>&1",
            pg_bin().join("psql").display(),
            self.sock.display(),
            self.port
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &psql]);
        match run_with_input(&mut cmd, script) {
            Ok(out) | Err(out) => out,
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        answer(self.try_sql(sql), sql, || self.log())
    }

    /// The error of `sql`, which must fail.
    pub fn sql_err(&self, sql: &str) -> String {
        refusal(self.try_sql(sql), sql)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }
}

/// What `sql` answered, or a panic with its error and the server's log.
pub(crate) fn answer(result: Result<String, String>, sql: &str, log: impl FnOnce() -> String) -> String {
    result.unwrap_or_else(|e| panic!("{sql}: {e}\n--- server log ---\n{}", log()))
}

/// The error of `sql`, which must have failed.
pub(crate) fn refusal(result: Result<String, String>, sql: &str) -> String {
    match result {
        Ok(out) => panic!("{sql} succeeded: {out}"),
        Err(e) => e,
    }
}

/// Fails the test if the server log `log` shows a crashed process.
pub(crate) fn assert_no_crash_in(log: &str) {
    assert!(!log.contains("terminated by signal") && !log.contains("PANIC"), "a server process crashed:\n{log}");
}

impl Drop for Server {
    fn drop(&mut self) {
        // also after a start that timed out or a stop that failed: never leave a server behind
        if self.running || self.data.join("postmaster.pid").exists() {
            let _ =
                run(as_postgres(&pg_bin().join("pg_ctl")).args(["-m", "immediate", "-D"]).arg(&self.data).arg("stop"));
        }
    }
}

/// Compiles C `source` into the shared object `out` (soname = file name), linked against `needs`.
/// PostgreSQL's server headers are on the include path. No rpath.
pub fn cc(out: &Path, source: &str, needs: &[&Path]) {
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let src = out.with_extension("c");
    fs::write(&src, source).unwrap();
    let include = run(Command::new(pg_bin().join("pg_config")).arg("--includedir-server")).unwrap();
    let soname = out.file_name().unwrap().to_string_lossy().into_owned();
    let mut cmd = Command::new("cc");
    cmd.args(["-shared", "-fPIC", "-O1"]).arg(format!("-I{include}")).arg("-o").arg(out).arg(&src);
    cmd.arg(format!("-Wl,-soname,{soname}"));
    for need in needs {
        cmd.arg(need);
    }
    run(&mut cmd).unwrap_or_else(|e| panic!("cc {}: {e}", out.display()));
    fs::remove_file(src).unwrap();
}

/// A PostgreSQL module exporting `int <function>()` that returns `expr` (C).
pub fn pg_module_source(function: &str, prelude: &str, expr: &str) -> String {
    format!(
        "#include \"postgres.h\"\n#include \"fmgr.h\"\nPG_MODULE_MAGIC;\n{prelude}\n\
         PG_FUNCTION_INFO_V1({function});\nDatum {function}(PG_FUNCTION_ARGS) {{ PG_RETURN_INT32({expr}); }}\n"
    )
}

/// Writes a CloudNativePG-layout control file and 1.0 install script for `name` into `image`.
pub fn sql_extension(image: &Path, name: &str, script: &str) {
    let dir = image.join("share/extension");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join(format!("{name}.control")),
        format!("default_version = '1.0'\nmodule_pathname = '$libdir/{name}'\nrelocatable = true\n"),
    )
    .unwrap();
    fs::write(dir.join(format!("{name}--1.0.sql")), script).unwrap();
}

/// Images of modules built here from a few lines of C, under one prefix (`<root>/c`):
///
/// * `esp_bundled/`: module `lib/esp_bundled.so` needs `lib/libesp_mid.so.1`, which needs
///   `system/libesp_leaf.so.1`; no rpath. Its install script begins with
///   `LOAD '$libdir/esp_bundled'` and defines `esp_bundled_value()` (42) `AS '$libdir/esp_bundled'`.
/// * `esp_ghost/`: module `lib/esp_ghost.so` needs `libesp_ghost.so.1`, which exists nowhere.
/// * `first/esp_collide/`, `second/esp_collide/` (other prefixes): `lib/esp_collide.so`
///   answering 1 and 2.
pub fn c_fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = tempdir();
        let root = dir.path().to_path_buf();
        let img = root.join("c/esp_bundled");
        let leaf = img.join("system/libesp_leaf.so.1");
        let mid = img.join("lib/libesp_mid.so.1");
        cc(&leaf, "int esp_leaf(void) { return 41; }", &[]);
        cc(&mid, "int esp_leaf(void);\nint esp_mid(void) { return esp_leaf() + 1; }", &[&leaf]);
        cc(&img.join("lib/esp_bundled.so"), &pg_module_source("esp_bundled_value", "int esp_mid(void);", "esp_mid()"), &[&mid]);
        sql_extension(
            &img,
            "esp_bundled",
            "LOAD '$libdir/esp_bundled';\n\
             CREATE FUNCTION esp_bundled_value() RETURNS int AS '$libdir/esp_bundled', 'esp_bundled_value' LANGUAGE C;\n",
        );

        let ghost_img = root.join("c/esp_ghost");
        let ghost = root.join("build/libesp_ghost.so.1");
        cc(&ghost, "int esp_ghost(void) { return 1; }", &[]);
        cc(&ghost_img.join("lib/esp_ghost.so"), &pg_module_source("esp_ghost_value", "int esp_ghost(void);", "esp_ghost()"), &[&ghost]);
        sql_extension(&ghost_img, "esp_ghost", "CREATE FUNCTION esp_ghost_value() RETURNS int AS 'MODULE_PATHNAME' LANGUAGE C;\n");
        fs::remove_dir_all(root.join("build")).unwrap();

        for (prefix, value) in [("first", 1), ("second", 2)] {
            let module = root.join(format!("{prefix}/esp_collide/lib/esp_collide.so"));
            cc(&module, &pg_module_source("esp_collide_value", "", &value.to_string()), &[]);
        }
        run_chmod_readable(&root);
        Fixtures { _dir: dir, root }
    })
}

impl Server {
    /// Fails the test if any server process crashed.
    pub fn assert_no_crash(&self) {
        assert_no_crash_in(&self.log());
    }
}
