//! The agent's event loop: bus messages and blackboard changes, one callback at
//! a time, with a reload check between callbacks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mlua::{Function, Table, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{Agent, CallbackFailure, Halt, HandlerError, errors};
use crate::error::{Error, Result};
use crate::lua_api::{self, HANDLERS, TIMERS, WATCHES, pattern_matches};
use crate::store::{BlackboardEvent, Delivery};

enum Event {
    Message(Delivery),
    Change(BlackboardEvent),
    /// A timer (`every`, `after`) is due: its id.
    Timer(i64),
    Stop,
}

impl Agent {
    /// Handles events until the agent finishes or the task stops.
    pub(super) async fn event_loop(&mut self) -> Result<()> {
        loop {
            if !self.wants_events()? {
                return Ok(());
            }
            let event = self.next_event().await?;
            // After waking and before dispatching: an event that arrived after
            // new code was registered is handled by the new code.
            self.maybe_reload().await;
            match event {
                Event::Message(d) => self.dispatch_message(d).await?,
                Event::Change(ev) => self.dispatch_change(ev).await?,
                Event::Timer(id) => self.dispatch_timer(id).await?,
                Event::Stop => {
                    self.left = *self.stop.borrow() == Halt::Leave;
                    return Ok(());
                }
            }
            // A callback may have required a module lazily.
            self.publish_modules();
        }
    }

    /// The next event; while there is none the agent counts as idle.
    async fn next_event(&mut self) -> Result<Event> {
        let ctx = self.ctx.clone();
        let mut watch_rx = ctx.local.lock().watch_rx.take();
        let event = self.next_event_with(&mut watch_rx).await;
        ctx.local.lock().watch_rx = watch_rx;
        event
    }

    async fn next_event_with(
        &mut self,
        watch_rx: &mut Option<tokio::sync::broadcast::Receiver<BlackboardEvent>>,
    ) -> Result<Event> {
        let ctx = &self.ctx;
        if let Some(rx) = watch_rx.as_mut() {
            match rx.try_recv() {
                Ok(ev) => return Ok(Event::Change(ev)),
                Err(TryRecvError::Lagged(n)) => warn_lagged(&ctx.id, n),
                Err(_) => {}
            }
        }
        // A stopped task takes no new work, even while messages keep coming
        // (when it stopped because it went quiet, none are queued anyway).
        if *self.stop.borrow() != Halt::Go {
            return Ok(Event::Stop);
        }
        let next_timer = ctx.local.lock().timers.next();
        if let Some((id, due)) = next_timer
            && due <= tokio::time::Instant::now()
        {
            return Ok(Event::Timer(id));
        }
        // Messages kept while the agent waited for replies come first.
        let stashed = ctx.local.lock().stash.pop_front();
        if let Some(d) = stashed {
            return Ok(Event::Message(d));
        }
        if let Some(d) = ctx
            .coord
            .bus
            .take(&ctx.queues, &ctx.id, Duration::ZERO)
            .await?
        {
            return Ok(Event::Message(d));
        }
        // An agent waiting for its timer is not idle: the task does not go
        // quiet while one is set.
        let activity = &ctx.coord.activity;
        if next_timer.is_none() {
            activity.idle();
        }
        let wait = Duration::from_millis(ctx.coord.config.message_timeout);
        // One take across the turns of the loop: a probe answered does not
        // abandon a look on its way (its messages would have to be recovered).
        let take = ctx.coord.bus.take(&ctx.queues, &ctx.id, wait);
        tokio::pin!(take);
        let event = loop {
            let changed = async {
                match watch_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match next_timer {
                    Some((id, due)) => {
                        tokio::time::sleep_until(due).await;
                        id
                    }
                    None => std::future::pending().await,
                }
            };
            // Biased, probe last: an agent answers a quiescence probe only when
            // no event is ready for it (see `coordination::Activity`).
            tokio::select! {
                biased;
                ev = changed => match ev {
                    Ok(ev) => break Ok(Event::Change(ev)),
                    Err(RecvError::Lagged(n)) => warn_lagged(&ctx.id, n),
                    Err(RecvError::Closed) => *watch_rx = None,
                },
                id = timer => break Ok(Event::Timer(id)),
                taken = &mut take => match taken {
                    Ok(Some(d)) => break Ok(Event::Message(d)),
                    Ok(None) => take.set(ctx.coord.bus.take(&ctx.queues, &ctx.id, wait)),
                    Err(e) => break Err(e),
                },
                _ = self.stop.changed() => break Ok(Event::Stop),
                Ok(()) = self.probe.changed(), if next_timer.is_none() => {
                    let generation = *self.probe.borrow_and_update();
                    // A change published before the probe may have landed
                    // after this poll looked at `changed` (another thread
                    // wrote it meanwhile): answering would end the task with
                    // it unhandled. Take it on the next turn instead.
                    if watch_rx.as_ref().is_some_and(|rx| !rx.is_empty()) {
                        continue;
                    }
                    activity.answer(generation);
                }
            }
        };
        if next_timer.is_none() {
            activity.busy();
        }
        event
    }

    /// Runs the handlers of one message; fails only when the agent cannot go on
    /// (heap spent, store gone), after giving the message back.
    async fn dispatch_message(&mut self, delivery: Delivery) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.counters
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        let envelope = &delivery.envelope;
        let label = format!("message '{}' from {}", envelope.kind, envelope.from);
        let result = self
            .run_callback(&label, self.handle_message(&delivery))
            .await;
        let (error, mut fatal) = failure(result);
        // A handler past callback_timeout fails like one that raised: the
        // message goes back (dead-lettered after max_attempts) and the agent
        // goes on. Failing the agent let one message take down every agent
        // of its role in turn, and the work queued behind it.
        if matches!(error, Some(Error::AgentTimeout { .. })) {
            fatal = false;
        }
        lua_api::settle_held(&ctx, error.as_ref()).await?;
        let Some(error) = error else {
            ctx.coord.bus.ack(&delivery).await?;
            return Ok(());
        };
        if ctx.coord.bus.nack(&delivery, &ctx.id, &error).await? {
            // Reported with the run's dead letters, not counted again here.
            let e = &delivery.envelope;
            let what = format!(
                "message '{}' from {} dead-lettered after {}",
                e.kind,
                e.from,
                crate::text::plural(e.attempts, "attempt", "attempts")
            );
            self.log_repeating(&what, &format!("{what} ({})", e.id));
        }
        if fatal {
            return Err(error);
        }
        self.record_handler_error(label, error, false);
        Ok(())
    }

    async fn handle_message(&self, delivery: &Delivery) -> mlua::Result<()> {
        let msg = lua_api::message_table(&self.lua, &delivery.envelope)?;
        let handlers: Table = self.lua.named_registry_value(HANDLERS)?;
        let mut handled = false;
        // Collected first: the iterator borrows the VM and must not live across an await.
        let entries: Vec<Table> = handlers
            .sequence_values::<Table>()
            .collect::<mlua::Result<_>>()?;
        for entry in entries {
            let kind: Option<String> = entry.get("type")?;
            if kind.is_none_or(|k| *k == *delivery.envelope.kind) {
                handled = true;
                entry
                    .get::<Function>("fn")?
                    .call_async::<()>(msg.clone())
                    .await?;
            }
        }
        if handled {
            return Ok(());
        }
        match self.module.get::<Value>("on_message")? {
            Value::Function(f) => f.call_async::<()>((self.state.clone(), msg)).await,
            _ => {
                tracing::warn!(agent = %self.ctx.id, kind = %delivery.envelope.kind, "message has no handler; dropped");
                Ok(())
            }
        }
    }

    /// Runs the watches of one change; fails only when the agent cannot go on.
    async fn dispatch_change(&mut self, ev: BlackboardEvent) -> Result<()> {
        let label = format!("watch of '{}'", ev.key);
        let result = self.run_callback(&label, self.handle_change(&ev)).await;
        let (error, fatal) = failure(result);
        lua_api::settle_held(&self.ctx, error.as_ref()).await?;
        match error {
            None => Ok(()),
            Some(e) if fatal => Err(e),
            Some(e) => {
                self.record_handler_error(label, e, true);
                Ok(())
            }
        }
    }

    /// Runs the callback of timer `id`; fails only when the agent cannot go on.
    async fn dispatch_timer(&mut self, id: i64) -> Result<()> {
        let ctx = self.ctx.clone();
        let Some(timer) = ctx.local.lock().timers.fire(id) else {
            return Ok(()); // cancelled meanwhile
        };
        let callback = (|| -> mlua::Result<Value> {
            let timers: Table = self.lua.named_registry_value(TIMERS)?;
            let callback: Value = timers.raw_get(id)?;
            if timer.every.is_none() {
                timers.raw_set(id, Value::Nil)?;
            }
            Ok(callback)
        })()
        .map_err(|e| errors::from_lua(&e))?;
        let label = match &callback {
            Value::String(name) => format!("timer '{}'", name.to_string_lossy()),
            _ => format!("timer {id}"),
        };
        let result = self
            .run_callback(&label, self.handle_timer(id, callback))
            .await;
        let (error, fatal) = failure(result);
        lua_api::settle_held(&ctx, error.as_ref()).await?;
        match error {
            None => Ok(()),
            Some(e) if fatal => Err(e),
            // A round of `every` that raised is followed by the next; `after` is lost.
            Some(e) => {
                self.record_handler_error(label, e, timer.every.is_none());
                Ok(())
            }
        }
    }

    async fn handle_timer(&self, id: i64, callback: Value) -> mlua::Result<()> {
        match callback {
            Value::Function(f) => f.call_async::<()>(()).await,
            Value::String(name) => {
                let name = name.to_string_lossy();
                match self.module.get::<Value>(name.as_str())? {
                    Value::Function(f) => f.call_async::<()>(self.state.clone()).await,
                    other => Err(mlua::Error::external(format!(
                        "timer {id}: the role's module has no function '{name}' to call (found {})",
                        other.type_name()
                    ))),
                }
            }
            _ => Ok(()),
        }
    }

    async fn handle_change(&self, ev: &BlackboardEvent) -> mlua::Result<()> {
        let watches: Table = self.lua.named_registry_value(WATCHES)?;
        let value = match &ev.value {
            Some(v) => lua_api::to_lua(&self.lua, v)?,
            None => Value::Nil,
        };
        let entries: Vec<Table> = watches
            .sequence_values::<Table>()
            .collect::<mlua::Result<_>>()?;
        for entry in entries {
            let pattern: String = entry.get("pattern")?;
            if pattern_matches(&pattern, &ev.key) {
                entry
                    .get::<Function>("fn")?
                    .call_async::<()>((ev.key.as_str(), value.clone()))
                    .await?;
            }
        }
        Ok(())
    }

    /// Logs an error line: `full` the first time `key` is seen, then `key`
    /// with a count at the 10th, 100th, 1000th... time, so the same error
    /// again and again (a broken handler, a timer every 10 ms) does not
    /// flood the log.
    fn log_repeating(&mut self, key: &str, full: &str) {
        let seen = self.repeats.entry(key.to_string()).or_insert(0);
        *seen += 1;
        match *seen {
            1 => tracing::error!(agent = %self.ctx.id, "{full}"),
            n if power_of_ten(n) => tracing::error!(
                agent = %self.ctx.id,
                "{key} (the same error {n} times so far)"
            ),
            _ => {}
        }
    }

    fn record_handler_error(&mut self, during: String, error: Error, lost: bool) {
        let text = error.to_string();
        let first_line = text.lines().next().unwrap_or_default();
        self.log_repeating(
            &format!("{during}: {first_line}"),
            &format!("{during}: {text}"),
        );
        self.ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.ctx
            .coord
            .journal
            .record(|| handler_failed(&during, &error));
        self.handler_errors.push(HandlerError {
            during,
            error,
            lost,
        });
    }
}

/// The error of a callback that failed, and whether the agent cannot go on:
/// its budget or heap ran out, or the store failed under it (a Coordination
/// error: the next event could not be taken either).
fn failure(result: std::result::Result<(), CallbackFailure>) -> (Option<Error>, bool) {
    match result {
        Ok(()) => (None, false),
        Err(CallbackFailure::Script(e)) => {
            let e = errors::from_lua(&e);
            let fatal = matches!(e, Error::Coordination(_));
            (Some(e), fatal)
        }
        Err(CallbackFailure::Fatal(e)) => (Some(e), true),
    }
}

/// True for 10, 100, 1000, ...
fn power_of_ten(count: u64) -> bool {
    let mut n = count;
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1 && count >= 10
}

/// The journal event of a failed handler, as it happens.
fn handler_failed(during: &str, error: &Error) -> crate::coordination::journal::Event {
    crate::coordination::journal::Event::HandlerFailed {
        during: during.to_string(),
        error_kind: error.kind().to_string(),
        message: error.to_string(),
    }
}

fn warn_lagged(agent: &str, n: u64) {
    tracing::warn!(agent = %agent, "watch fell behind: {n} blackboard changes skipped");
}
