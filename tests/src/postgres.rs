//! A throw-away PostgreSQL server for tests: a new cluster (`initdb`) in a temporary directory,
//! on a free loopback port, run as the `postgres` user when the tests run as root (PostgreSQL
//! refuses to run as root). Installed by `scripts/setup_postgres.sh` (with pgvector).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running test cluster; stopped and deleted on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its loopback port.
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMAGESEARCH_PG_BIN") {
        return PathBuf::from(dir);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    let from_pg_config = out.ok().filter(|o| o.status.success()).map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let dir = from_pg_config.filter(|d| d.join("initdb").is_file()).unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(dir.join("initdb").is_file(), "no PostgreSQL in {}: run scripts/setup_postgres.sh (or set IMAGESEARCH_PG_BIN)", dir.display());
    dir
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// `program args…`, as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

impl Postgres {
    /// A new cluster, started and accepting connections.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("imagesearch-pg").tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("-R").arg("postgres:postgres").arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let mut init = as_postgres(&bin_dir().join("initdb"));
        init.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
        run(init, "initdb");
        let mut pg = Postgres { dir, child: None, port: crate::free_port() };
        pg.resume();
        pg.create_database("gallery");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server again on the same data and port (after [`Postgres::crash`]).
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        let child = as_postgres(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(bin_dir().join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("postgres exited ({status}): {}", std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default());
            }
            assert!(Instant::now() < until, "postgres did not accept connections within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`): clients lose
    /// their connections; committed data stays.
    pub fn crash(&mut self) {
        let mut stop = as_postgres(&bin_dir().join("pg_ctl"));
        stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
        run(stop, "pg_ctl stop");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Runs SQL through `psql` (as the superuser), returning its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates a database.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
    }

    /// The URL of a database of this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
