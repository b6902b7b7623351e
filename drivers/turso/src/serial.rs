//! One statement stream at a time on the driver's connection, without a
//! runtime: an async lock built on event-listener, and the transaction
//! around each step. A step whose future was dropped half-way (its caller
//! stopped waiting) leaves its transaction open; the next step rolls it back
//! first, so an abandoned step changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::Event;
use litebus::Result;

use crate::conn::{TursoConn, map_err};

/// The connection and its turn-taking.
pub(crate) struct Serial {
    conn: turso::Connection,
    begin: &'static str,
    busy: AtomicBool,
    freed: Event,
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
pub(crate) struct Turn<'a>(&'a Serial);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
        // One waiter tries for the turn; one that finds nothing to do hands
        // it on the same way when it lets go.
        self.0.freed.notify(1);
    }
}

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
            busy: AtomicBool::new(false),
            freed: Event::new(),
            answered: Event::new(),
            dangling: AtomicBool::new(false),
        }
    }

    /// The turn if nobody has it.
    pub(crate) fn try_turn(&self) -> Option<Turn<'_>> {
        // `then`, not `then_some`: a `Turn` made and dropped would free the
        // turn someone else holds.
        (!self.busy.swap(true, Ordering::AcqRel)).then(|| Turn(self))
    }

    /// Offers the turn to one more waiter: called by a merged caller that
    /// leaves with its answer, since the offer it may have been woken by
    /// is then used by nobody.
    pub(crate) fn pass_on(&self) {
        self.freed.notify(1);
    }

    /// Wakes every caller waiting in [`Serial::freed_or_answered`].
    pub(crate) fn wake_all(&self) {
        self.answered.notify(usize::MAX);
    }

    /// Completes at the next release of the turn offered to this waiter, or
    /// when merged work has been answered.
    pub(crate) fn freed_or_answered(&self) -> impl Future<Output = ()> + Send + use<> {
        let freed = self.freed.listen();
        let answered = self.answered.listen();
        futures_lite::future::or(freed, answered)
    }

    async fn turn(&self) -> Turn<'_> {
        loop {
            if let Some(turn) = self.try_turn() {
                return turn;
            }
            let freed = self.freed.listen();
            if let Some(turn) = self.try_turn() {
                return turn;
            }
            freed.await;
        }
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
