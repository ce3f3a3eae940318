//! The agent's event loop: bus messages and blackboard changes, one callback at
//! a time, with a reload check between callbacks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mlua::{Function, Table, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{Agent, CallbackFailure, errors};
use crate::error::Result;
use crate::lua_api::{self, HANDLERS, WATCHES, pattern_matches};
use crate::store::{BlackboardEvent, Delivery};

enum Event {
    Message(Delivery),
    Change(BlackboardEvent),
    Stop,
}

impl Agent {
    /// Handles events until the agent finishes or the task stops.
    pub(super) async fn event_loop(&mut self) -> Result<()> {
        loop {
            if self.ctx.local.lock().finished {
                return Ok(());
            }
            let event = self.next_event().await?;
            // After waking and before dispatching: an event that arrived after
            // new code was registered is handled by the new code.
            self.maybe_reload().await;
            match event {
                Event::Message(d) => self.dispatch_message(d).await?,
                Event::Change(ev) => self.dispatch_change(ev).await?,
                Event::Stop => return Ok(()),
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
        if *self.stop.borrow() {
            return Ok(Event::Stop);
        }
        if let Some(d) = ctx
            .coord
            .bus
            .take(&ctx.queues, &ctx.id, Duration::ZERO)
            .await?
        {
            return Ok(Event::Message(d));
        }
        let activity = &ctx.coord.activity;
        activity.idle();
        let wait = Duration::from_millis(ctx.coord.config.message_timeout);
        let event = loop {
            let changed = async {
                match watch_rx.as_mut() {
                    Some(rx) => rx.recv().await,
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
                taken = ctx.coord.bus.take(&ctx.queues, &ctx.id, wait) => match taken {
                    Ok(Some(d)) => break Ok(Event::Message(d)),
                    Ok(None) => continue,
                    Err(e) => break Err(e),
                },
                _ = self.stop.changed() => break Ok(Event::Stop),
                Ok(()) = self.probe.changed() => {
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
        activity.busy();
        event
    }

    /// Runs the handlers of one message; fails only when the agent cannot go on
    /// (budget or heap spent), after giving the message back.
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
        let ok = result.is_ok();
        let fatal = match result {
            Ok(()) => None,
            Err(CallbackFailure::Script(e)) => {
                self.record_handler_error(format!("{label}: {}", errors::describe(&e)));
                None
            }
            Err(CallbackFailure::Fatal(e)) => Some(e),
        };
        lua_api::settle_held(&ctx, ok).await?;
        if ok {
            ctx.coord.bus.ack(&delivery).await?;
        } else if ctx.coord.bus.nack(&delivery).await? {
            // Reported, but not counted again: the handler's error already was.
            let message = format!(
                "message '{}' ({}) from {} dead-lettered after {} attempts",
                delivery.envelope.kind,
                delivery.envelope.id,
                delivery.envelope.from,
                delivery.envelope.attempts
            );
            tracing::error!(agent = %ctx.id, "{message}");
            self.handler_errors.push(message);
        }
        fatal.map_or(Ok(()), Err)
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
            if kind.is_none_or(|k| k == delivery.envelope.kind) {
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
        match self.run_callback(&label, self.handle_change(&ev)).await {
            Ok(()) => Ok(()),
            Err(CallbackFailure::Script(e)) => {
                self.record_handler_error(format!("{label}: {}", errors::describe(&e)));
                Ok(())
            }
            Err(CallbackFailure::Fatal(e)) => Err(e),
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

    fn record_handler_error(&mut self, message: String) {
        tracing::error!(agent = %self.ctx.id, "{message}");
        self.ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.handler_errors.push(message);
    }
}

fn warn_lagged(agent: &str, n: u64) {
    tracing::warn!(agent = %agent, "watch fell behind: {n} blackboard changes skipped");
}
