//! One statement stream at a time on the driver's connection, without a
//! runtime: the turn is an `async_lock::Mutex` (fair, runtime-free, and
//! cancel-safe: a caller that stops waiting for the turn passes its place
//! on), and each step's transaction is begun and ended here. A step whose
//! future was dropped half-way (its caller stopped waiting) leaves its
//! transaction open; the next step rolls it back first, so an abandoned
//! step changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::Event;
use litebus::Result;

use crate::conn::{TursoConn, map_err};

/// The connection and its turn-taking.
pub(crate) struct Serial {
    conn: turso::Connection,
    begin: &'static str,
    turn: async_lock::Mutex<()>,
    /// Merged work was answered (see `merge`).
    answered: Event,
    /// A transaction was begun and its step did not finish.
    dangling: AtomicBool,
}

/// A step's open transaction. Dropped without [`Tx::end`], it is rolled
/// back when the next step begins.
pub(crate) struct Tx<'a> {
    serial: &'a Serial,
    _turn: Turn<'a>,
}

impl Tx<'_> {
    /// The connection, for the step's statements.
    pub(crate) fn conn(&self) -> TursoConn<'_> {
        TursoConn::new(&self.serial.conn)
    }

    /// Rolls back everything the transaction did.
    pub(crate) async fn roll_back(self) {
        let _ = self.serial.conn.execute("ROLLBACK", ()).await;
        self.serial.dangling.store(false, Ordering::Release);
    }

    /// Commits if the step succeeded, else rolls back; gives the step's
    /// result (or the commit's error).
    pub(crate) async fn end<T>(self, result: Result<T>) -> Result<T> {
        let conn = &self.serial.conn;
        let result = match result {
            Ok(value) => match conn.execute("COMMIT", ()).await {
                Ok(_) => Ok(value),
                Err(e) => {
                    let _ = conn.execute("ROLLBACK", ()).await;
                    Err(map_err(e))
                }
            },
            Err(e) => {
                let _ = conn.execute("ROLLBACK", ()).await;
                Err(e)
            }
        };
        self.serial.dangling.store(false, Ordering::Release);
        result
    }
}

/// The right to use the connection; handed on when dropped.
pub(crate) type Turn<'a> = async_lock::MutexGuard<'a, ()>;

impl Serial {
    /// `memory`: the connection is the database's only one.
    pub(crate) fn new(conn: turso::Connection, memory: bool) -> Self {
        Serial {
            conn,
            // A file may have other connections (other drivers in this
            // process): take the write lock up front so that two steps never
            // deadlock upgrading a read lock. An in-memory database has this
            // one connection, so a plain `BEGIN` is as safe, and it is the
            // only form turso runs on wasm32: `BEGIN IMMEDIATE` also begins a
            // write on the temp database, whose lazy creation reads
            // `std::time::Instant`, which panics there.
            begin: if memory { "BEGIN" } else { "BEGIN IMMEDIATE" },
            turn: async_lock::Mutex::new(()),
            answered: Event::new(),
            dangling: AtomicBool::new(false),
        }
    }

    /// Wakes every caller waiting in [`Serial::turn_or_answered`].
    pub(crate) fn wake_all(&self) {
        self.answered.notify(usize::MAX);
    }

    /// The turn, or `None` once merged work has been answered, whichever
    /// comes first. `answered` was armed before the caller last looked
    /// for its answer, so no answer falls between the look and the wait.
    pub(crate) async fn turn_or_answered(
        &self,
        answered: event_listener::EventListener,
    ) -> Option<Turn<'_>> {
        futures_lite::future::or(async { Some(self.turn.lock().await) }, async {
            answered.await;
            None
        })
        .await
    }

    /// Arms a wait for the next answer of merged work.
    pub(crate) fn listen_answered(&self) -> event_listener::EventListener {
        self.answered.listen()
    }

    async fn turn(&self) -> Turn<'_> {
        self.turn.lock().await
    }

    /// Rolls back the transaction of a step whose caller stopped waiting
    /// half-way, if there is one (call with the turn held).
    async fn roll_back_abandoned(&self) {
        if self.dangling.swap(false, Ordering::AcqRel) {
            // Fails harmlessly if the abandoned step had not begun yet.
            let _ = self.conn.execute("ROLLBACK", ()).await;
        }
    }

    /// Begins a step's transaction once the connection is free. End it with
    /// [`Tx::end`].
    pub(crate) async fn begin(&self) -> Result<Tx<'_>> {
        let turn = self.turn().await;
        self.begin_in(turn).await
    }

    /// Begins a transaction in a turn already taken.
    pub(crate) async fn begin_in<'a>(&'a self, turn: Turn<'a>) -> Result<Tx<'a>> {
        self.roll_back_abandoned().await;
        self.dangling.store(true, Ordering::Release);
        if let Err(e) = self.conn.execute(self.begin, ()).await {
            self.dangling.store(false, Ordering::Release);
            return Err(map_err(e));
        }
        Ok(Tx {
            serial: self,
            _turn: turn,
        })
    }

    /// Runs `sql` outside any step's transaction.
    pub(crate) async fn plain(&self, sql: &str) -> Result<()> {
        let _turn = self.turn().await;
        self.roll_back_abandoned().await;
        let mut rows = self.conn.query(sql, ()).await.map_err(map_err)?;
        while rows.next().await.map_err(map_err)?.is_some() {}
        Ok(())
    }
}
