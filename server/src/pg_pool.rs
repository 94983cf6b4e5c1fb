//! Connections to PostgreSQL for the gallery store and the search indexes: a small pool
//! that drops broken connections and retries an idempotent call once on a fresh one, and the
//! one mapping of database errors to what a caller may see.

use std::sync::Mutex;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls};

use crate::error::ServeError;

/// A database error as the caller may see it: a lost or unreachable database is UNAVAILABLE, a
/// full disk RESOURCE_EXHAUSTED, anything else an internal storage error. Details go to the log.
pub(crate) fn db_error(what: &str, e: &postgres::Error) -> ServeError {
    // `Display` of a server error says only "db error": log the server's own message.
    let e = &DbErrorText(e);
    if e.code() == Some(&SqlState::DISK_FULL) {
        tracing::error!(error = %e, "gallery database disk full; {what} refused, nothing stored");
        return ServeError::DiskFull;
    }
    if is_lost(e.0) || e.code() == Some(&SqlState::CANNOT_CONNECT_NOW) {
        tracing::error!(error = %e, "gallery database unreachable during {what}");
        return ServeError::Unavailable(format!(
            "the gallery database is unreachable ({what} not done; nothing was stored); retry — the server reconnects by itself"
        ));
    }
    tracing::error!(error = %e, "gallery database error during {what}");
    ServeError::Storage(format!("the gallery database refused the {what} (details in the server log); nothing was stored"))
}

/// A database error with the server's message and code when it sent one.
struct DbErrorText<'a>(&'a postgres::Error);

impl std::fmt::Display for DbErrorText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(d) => write!(f, "{} ({}: {})", self.0, d.code().code(), d.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl DbErrorText<'_> {
    fn code(&self) -> Option<&SqlState> {
        self.0.code()
    }
}

/// A few connections, made when needed and dropped when broken.
pub(crate) struct Pool {
    config: postgres::Config,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
}

/// A connection out of the pool; back into it on drop unless broken.
pub(crate) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take().filter(|c| !c.is_closed()) {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.pool.max_idle {
                idle.push(c);
            }
        }
    }
}

/// Whether an error means the connection (or the server behind it) is gone.
pub(crate) fn is_lost(e: &postgres::Error) -> bool {
    e.is_closed() || e.code().is_none() || e.code() == Some(&SqlState::ADMIN_SHUTDOWN)
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A sync client closes its connection on its own runtime: dropped where an async runtime
        // is running (a server stopping), that would panic, so the clients go on a plain thread.
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections made with `config`.
    pub(crate) fn new(config: postgres::Config, max_idle: usize) -> Self {
        Pool { config, idle: Mutex::new(Vec::new()), max_idle }
    }

    /// Drops every idle connection (the database was found restarted).
    pub(crate) fn forget_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Runs `f` on a connection. When the connection turns out lost (the database restarted
    /// since it was last used), every idle connection is dropped and `f` runs once more on a
    /// new one: everything the store sends is idempotent (upserts, deletes by key, reads).
    pub(crate) fn run<T>(&self, what: &str, mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>) -> Result<T, ServeError> {
        let mut c = self.get(what)?;
        match f(&mut c) {
            Err(e) if is_lost(&e) => {
                drop(c);
                self.forget_idle();
                let mut c = self.get(what)?;
                f(&mut c).map_err(|e| db_error(what, &e))
            }
            other => other.map_err(|e| db_error(what, &e)),
        }
    }

    pub(crate) fn get(&self, what: &str) -> Result<Conn<'_>, ServeError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let client = match idle.filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => self.config.connect(NoTls).map_err(|e| db_error(what, &e))?,
        };
        Ok(Conn { pool: self, client: Some(client) })
    }
}

/// Connection settings: the URL (`postgres://user:pass@host:port/db`) and the time a connect or
/// a statement may take.
pub fn pg_config(url: &str, timeout: Duration) -> Result<postgres::Config, ServeError> {
    let mut config: postgres::Config =
        url.parse().map_err(|e| ServeError::InvalidArgument(format!("--database-url is not a PostgreSQL URL: {e}")))?;
    config.connect_timeout(timeout);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.options(&format!("-c statement_timeout={}", timeout.as_millis()));
    config.application_name("imagesearch-server");
    Ok(config)
}

