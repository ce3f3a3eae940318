//! Message queues as Redis Streams read through one consumer group.
//!
//! A queue is the stream `task:{id}:bus:{queue}`. A send is one script call:
//! an XADD applied once however often the send is retried (the process's
//! numbered bit in `task:{id}:sent:{sender}`; see [`SEND`]), and on the
//! first send of a process to a queue the queue recorded in
//! `task:{id}:queues`. Readers create the queue's consumer group, once per
//! stream and process (again after NOGROUP: the server lost the stream).
//! Taking reads into the taker's pending list (XREADGROUP, then a look at the
//! member's key: a fenced member gives back what it read); acknowledging
//! removes the entry (XACK + XDEL, in batches: see [`super::acks`]), so a
//! stream holds exactly the messages waiting or in flight. A message given
//! back is parked on the `~returned` consumer with its entry id, hence its
//! place in the queue, and the delivery count the server keeps; takers look
//! there first. Dead letters go to `task:{id}:deadletter`.

use std::time::Duration;

use futures::FutureExt;
use redis::{RedisResult, Value as RedisValue};

use super::batch::{Write, WriteKind};
use super::blackboard::decode;
use super::conn::{command_error, error_code, script_call};
use super::keys::{GROUP, Keys, RETURNED};
use super::reply::{
    array, entry_delivery, entry_ids, field, id_text, is_fence_mark, pending_counts, read_reply,
    unexpected, usize_of,
};
use super::scripts::{CLAIM_RETURNED, GIVE_BACK, NACK, RELEASE, REVIVE, fenced_error};
use super::{RedisStore, Server};
use crate::store::{
    Delivery, Envelope, MessageState, Pending, QueueStore, QueuedMessage, StoreError, StoreResult,
};

/// Messages read ahead from a queue only its consumer reads (its own).
const READ_AHEAD: usize = 64;

/// What one look at a consumer's queues found.
pub(super) struct Fetched {
    /// Messages given back and claimed now, oldest first: they come first.
    pub returned: Vec<Delivery>,
    /// New messages, in queue order.
    pub new: Vec<Delivery>,
}

impl Server {
    /// Sends `envelope` to `queue` without waiting for the outcome.
    fn push_nowait(&self, task: &str, queue: &str, envelope: &Envelope) -> Pending {
        let keys = Keys::new(task);
        let stream = keys.bus(queue);
        let json = serde_json::to_string(envelope).expect("an envelope always serializes");
        let first = {
            // Looked up before inserting: the stream is known on every send
            // but the first, and `insert` would need a copy of its name.
            let mut registered = self.registered.lock();
            !registered.contains(&stream) && registered.insert(stream.clone())
        };
        let (member, flag) = self.fence(task);
        let write = Write {
            member,
            flag,
            kind: WriteKind::Send {
                stream: stream.clone(),
                queues: keys.queues(),
                sent: keys.sent(&self.sender),
                json,
                record: first,
                queue: queue.to_string(),
                // Numbered once: a resend of this write carries the same number.
                number: self.next_send(task),
                deadline: self.clock.deadline(self.conn.patience),
            },
        };
        let (epoch, answer) = self
            .conn
            .write(["bus send to '", queue, "'"].concat(), write);
        let me = self.registered.clone();
        Pending::sent(
            epoch,
            async move {
                match answer.await {
                    Ok((_, again)) => Ok(again),
                    Err(e) => {
                        if first {
                            me.lock().remove(&stream);
                        }
                        Err(e)
                    }
                }
            }
            .boxed(),
        )
    }

    /// One look at `streams` for `consumer`, in one round trip: sends the
    /// acknowledgements waiting in this process, creates groups not known
    /// yet, looks for messages given back, and reads new messages (up to
    /// [`READ_AHEAD`] from the consumer's own queue, one from a shared one).
    /// Messages given back are then claimed (one more round trip, only then).
    /// One attempt: the caller decides about retries.
    pub(super) async fn fetch(
        &self,
        task: &str,
        keys: &Keys,
        streams: &[String],
        consumer: &str,
    ) -> RedisResult<Fetched> {
        let (member, flag) = self.fence(task);
        for _ in 0..3 {
            // Sent first, so the server applies them before the reads.
            let acks = self.send_acks();
            let mut pipe = redis::pipe();
            let missing = self.missing_groups(streams);
            for stream in &missing {
                pipe.add_command(create_group(stream));
            }
            // The consumer's own queue gets messages given back only from
            // this process; shared queues from any.
            let look: Vec<&String> = streams
                .iter()
                .filter(|s| !is_own(keys, s, consumer) || self.parked.lock().contains(*s))
                .collect();
            for stream in &look {
                pipe.cmd("XPENDING")
                    .arg(*stream)
                    .arg(GROUP)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .arg(RETURNED);
            }
            let count = |stream: &String| match is_own(keys, stream, consumer) {
                true => READ_AHEAD,
                false => 1,
            };
            for stream in streams {
                pipe.cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(count(stream))
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(">");
            }
            // Then the member's key: a member not fenced when the server
            // reads it was not fenced when it applied the reads (a fence is
            // for good), so what they took is this process's to hand out.
            let member_of_task = flag == "1";
            if member_of_task {
                pipe.cmd("GET").arg(&member);
            }
            let replies = self.conn.round_trip(&pipe).await;
            // A batch that failed waits for the next look; one refused to a
            // fenced member ends the take, once what the reads took is back.
            let refused = match acks {
                Some(acks) => acks.await.err().filter(|e| e.code() == Some("FENCED")),
                None => None,
            };
            let replies = match replies {
                Ok(replies) => replies,
                Err(e) => {
                    self.forget_groups(&missing);
                    return Err(refused.unwrap_or(e));
                }
            };
            let rest = &replies[..];
            let (created, rest) = rest.split_at(missing.len().min(rest.len()));
            for (stream, r) in missing.iter().zip(created) {
                if !matches!(error_code(r), None | Some("BUSYGROUP")) {
                    self.groups.lock().remove(stream);
                }
            }
            let (pending, rest) = rest.split_at(look.len().min(rest.len()));
            let (reads, member_state) = rest.split_at(streams.len().min(rest.len()));
            if member_of_task && member_state.first().is_some_and(is_fence_mark) {
                // Fenced, maybe before the reads: what they took goes back
                // to the queues for the agents' adopter (or whoever reads next).
                self.give_back_reads(streams, reads, consumer).await;
                return Err(refused.unwrap_or_else(fenced_error));
            }
            if let Some(refused) = refused {
                return Err(refused);
            }
            if pending
                .iter()
                .chain(reads)
                .any(|r| error_code(r) == Some("NOGROUP"))
            {
                // The server lost the streams (a restart without persistence,
                // a clean): create the groups again and look again.
                self.forget_groups(streams);
                continue;
            }
            if let Some(e) = pending.iter().chain(reads).find_map(server_error) {
                return Err(e);
            }
            let mut parked = Vec::new();
            for (stream, reply) in look.iter().zip(pending) {
                if array(reply).is_empty() {
                    self.parked.lock().remove(*stream);
                } else {
                    parked.push(*stream);
                }
            }
            let mut fetched = Fetched {
                returned: Vec::new(),
                new: Vec::new(),
            };
            for reply in reads {
                fetched.new.extend(read_reply(keys, reply, 1)?);
            }
            if !parked.is_empty() {
                fetched
                    .returned
                    .extend(self.claim_returned(task, keys, &parked, consumer).await?);
            }
            return Ok(fetched);
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "the queue's consumer group keeps disappearing",
        )))
    }

    /// Claims the oldest message given back on the first of `streams` that
    /// still has one (another consumer may have been quicker).
    async fn claim_returned(
        &self,
        task: &str,
        keys: &Keys,
        streams: &[&String],
        consumer: &str,
    ) -> RedisResult<Option<Delivery>> {
        let (member, flag) = self.fence(task);
        let mut names: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
        names.push(&member);
        let mut cmd = script_call(&CLAIM_RETURNED, &names);
        cmd.arg(GROUP).arg(consumer).arg(RETURNED).arg(flag);
        let reply = self.conn.round_trip_cmd(&cmd).await?;
        let RedisValue::Array(parts) = reply else {
            return Ok(None);
        };
        let [index, id, fields, deliveries] = parts.as_slice() else {
            return Err(unexpected("CLAIM_RETURNED"));
        };
        let stream = usize_of(index)
            .and_then(|i| streams.get(i.wrapping_sub(1)))
            .ok_or_else(|| unexpected("CLAIM_RETURNED"))?;
        let queue = keys.queue_of(stream);
        let deliveries = usize_of(deliveries).unwrap_or(1) as u32;
        Ok(Some(entry_delivery(queue, id, fields, deliveries)?))
    }

    /// Puts what `reads` (replies to XREADGROUP on `streams`) moved into
    /// `consumer`'s pending list back in the queues, as new messages: once
    /// this process is fenced no one would look for them there (its agents'
    /// adopter reads under the same names, only new messages). Best effort:
    /// the process is going away, a failure is only logged.
    async fn give_back_reads(&self, streams: &[String], reads: &[RedisValue], consumer: &str) {
        let mut pipe = redis::pipe();
        let mut any = false;
        for (stream, reply) in streams.iter().zip(reads) {
            let ids = entry_ids(reply);
            if ids.is_empty() {
                continue;
            }
            any = true;
            let cmd = pipe.add_command(script_call(&GIVE_BACK, &[stream]));
            cmd.arg(GROUP).arg(consumer).arg(ids);
        }
        if !any {
            return;
        }
        if let Err(e) = self.conn.round_trip(&pipe).await {
            tracing::warn!(
                consumer,
                "fenced: could not give back the messages of its last read: {e}"
            );
        }
    }

    /// The messages `consumer` holds on `streams` according to the server
    /// (XREADGROUP from id 0 reads the consumer's own pending list).
    pub(super) async fn held_by(
        &self,
        keys: &Keys,
        streams: &[String],
        consumer: &str,
    ) -> RedisResult<Vec<Delivery>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("STREAMS")
            .arg(streams);
        for _ in streams {
            cmd.arg("0");
        }
        match self.conn.round_trip_cmd(&cmd).await {
            Ok(reply) => read_reply(keys, &reply, 1),
            Err(e) if e.code() == Some("NOGROUP") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Parks every message `consumer` holds on `queues`; returns how many.
    async fn release_on(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
    ) -> StoreResult<usize> {
        let keys = Keys::new(task);
        let mut released = 0;
        for q in queues {
            let stream = keys.bus(q);
            let n: i64 = self
                .conn
                .eval("bus release", &RELEASE, &[&stream], |c| {
                    c.arg(GROUP).arg(consumer).arg(RETURNED);
                })
                .await?;
            if n > 0 {
                self.parked.lock().insert(stream);
            }
            released += n as usize;
        }
        Ok(released)
    }

    /// Every queue written to, sorted.
    pub(super) async fn queue_names(&self, task: &str) -> StoreResult<Vec<String>> {
        let set = Keys::new(task).queues();
        let mut names: Vec<String> = self
            .conn
            .query("bus queues", || {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(&set);
                cmd
            })
            .await?;
        names.sort();
        Ok(names)
    }

    /// Streams among `streams` whose group this process has not made sure
    /// of, marked known from now on: the caller creates them, and another
    /// look meanwhile does not again (a `BUSYGROUP` for nothing; should its
    /// reads reach the server first, they find no group and it looks again).
    /// A creation that fails, or whose pipeline fails, unmarks its stream.
    fn missing_groups(&self, streams: &[String]) -> Vec<String> {
        let mut known = self.groups.lock();
        streams
            .iter()
            .filter(|s| known.insert((*s).clone()))
            .cloned()
            .collect()
    }

    /// Forgets what this process knew of a cleaned task's queues.
    pub(super) fn forget_task(&self, task: &str) {
        let prefix = Keys::new(task).bus("");
        self.groups.lock().retain(|s| !s.starts_with(&prefix));
        self.registered.lock().retain(|s| !s.starts_with(&prefix));
        self.parked.lock().retain(|s| !s.starts_with(&prefix));
        self.acks.lock().forget(&prefix);
        self.waits.forget(&prefix);
        self.index_raised.lock().remove(task);
        self.sends.lock().remove(task);
    }

    fn forget_groups(&self, streams: &[String]) {
        let mut known = self.groups.lock();
        for s in streams {
            known.remove(s);
        }
    }
}

/// True when `stream` is `consumer`'s own queue, which nobody else reads.
fn is_own(keys: &Keys, stream: &str, consumer: &str) -> bool {
    keys.queue_of(stream) == consumer
}

fn create_group(stream: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM");
    cmd
}

/// A reply that is a server error, as an error.
fn server_error(reply: &RedisValue) -> Option<redis::RedisError> {
    match reply {
        RedisValue::ServerError(e) => Some(e.clone().into()),
        _ => None,
    }
}

#[async_trait::async_trait]
impl QueueStore for RedisStore {
    async fn queue_push(&self, task: &str, queue: &str, envelope: &Envelope) -> StoreResult<()> {
        self.push_nowait(task, queue, envelope)
            .settle()
            .await
            .map(|_| ())
    }

    fn queue_push_nowait(&self, task: &str, queue: &str, envelope: Envelope) -> Pending {
        self.push_nowait(task, queue, &envelope)
    }

    async fn queue_take(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>> {
        self.0.take(task, queues, consumer, wait).await
    }

    fn queue_take_ready(&self, task: &str, queues: &[String], consumer: &str) -> Option<Delivery> {
        self.0.take_ready(task, queues, consumer)
    }

    fn queue_take_held(&self, task: &str, queues: &[String], consumer: &str) -> Option<Delivery> {
        self.0.take_held(task, queues, consumer)
    }

    fn queue_ack_nowait(&self, task: &str, delivery: &Delivery) -> Pending {
        self.consumers.settled(task, delivery);
        self.ack_later(
            Keys::new(task).bus(&delivery.queue),
            delivery.receipt.entry().to_string(),
        );
        Pending::done(Ok(()))
    }

    async fn queue_ack(&self, task: &str, delivery: &Delivery) -> StoreResult<()> {
        self.queue_ack_nowait(task, delivery)
            .settle()
            .await
            .map(|_| ())
    }

    async fn queue_nack(
        &self,
        task: &str,
        delivery: &Delivery,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let (stream, dead) = (keys.bus(&delivery.queue), keys.dead_letters());
        let json =
            serde_json::to_string(&*delivery.envelope).expect("an envelope always serializes");
        // Empty when this process did not hand the message out: no holder check then.
        let holder = self.consumers.holder(task, delivery).unwrap_or_default();
        let (member, fenced) = self.fence(task);
        let outcome: i64 = self
            .conn
            .eval("bus nack", &NACK, &[&stream, &dead, &member], |c| {
                c.arg(GROUP)
                    .arg(delivery.receipt.entry())
                    .arg(&holder)
                    .arg(RETURNED)
                    .arg(max_attempts)
                    .arg(&*delivery.queue)
                    .arg(&json)
                    .arg(fenced);
            })
            .await?;
        self.consumers.settled(task, delivery);
        if outcome == 0 {
            self.parked.lock().insert(stream);
        }
        Ok(outcome == 1)
    }

    /// Parks every message `consumer` holds. A consumer of this process read
    /// only its own queues; one of another process (lost) may have read any.
    async fn queue_release_consumer(&self, task: &str, consumer: &str) -> StoreResult<usize> {
        let queues = self.consumers.close(task, consumer);
        self.flush_acks().await?;
        let queues = match queues {
            Some(q) => q,
            None => self.queue_names(task).await?,
        };
        self.release_on(task, &queues, consumer).await
    }

    async fn queue_revive(&self, task: &str, queue: &str) -> StoreResult<usize> {
        let keys = Keys::new(task);
        let (dead, stream, queues) = (keys.dead_letters(), keys.bus(queue), keys.queues());
        let n: i64 = self
            .conn
            .eval("bus revive", &REVIVE, &[&dead, &stream, &queues], |c| {
                c.arg(queue).arg(GROUP);
            })
            .await?;
        if n > 0 {
            self.groups.lock().insert(stream.clone());
            self.registered.lock().insert(stream);
        }
        Ok(n as usize)
    }

    async fn queue_list(&self, task: &str) -> StoreResult<Vec<QueuedMessage>> {
        self.flush_acks().await?;
        let keys = Keys::new(task);
        let mut out = Vec::new();
        for queue in self.queue_names(task).await? {
            let stream = keys.bus(&queue);
            let replies = self
                .conn
                .replies("bus list", || {
                    let mut pipe = redis::pipe();
                    pipe.cmd("XRANGE").arg(&stream).arg("-").arg("+");
                    pipe.cmd("XPENDING")
                        .arg(&stream)
                        .arg(GROUP)
                        .arg("-")
                        .arg("+")
                        .arg(100_000);
                    pipe
                })
                .await?;
            let [entries, pending] = replies.as_slice() else {
                return Err(command_error("bus list", &unexpected("XRANGE")));
            };
            // No group yet (nobody read the queue): nothing was delivered.
            let counts = match error_code(pending) {
                Some(_) => Vec::new(),
                None => pending_counts(pending),
            };
            for entry in array(entries) {
                let [id, fields] = array(entry) else { continue };
                let deliveries = id_text(id)
                    .and_then(|i| counts.iter().find(|(p, _)| *p == i))
                    .map_or(0, |(_, n)| *n);
                let d = entry_delivery(&queue, id, fields, deliveries as u32)
                    .map_err(|e| command_error("bus list", &e))?;
                out.push(QueuedMessage {
                    queue: queue.clone(),
                    envelope: std::sync::Arc::unwrap_or_clone(d.envelope),
                    state: MessageState::Pending,
                });
            }
        }
        let dead_key = keys.dead_letters();
        let dead: RedisValue = self
            .conn
            .query("bus list", || {
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(&dead_key).arg("-").arg("+");
                cmd
            })
            .await?;
        for entry in array(&dead) {
            let [_, fields] = array(entry) else { continue };
            let fields = array(fields);
            let (Some(queue), Some(m)) = (field(fields, "q"), field(fields, "m")) else {
                continue;
            };
            let mut envelope: Envelope = decode(&dead_key, &m)?;
            if let Some(a) = field(fields, "a").and_then(|a| a.parse().ok()) {
                envelope.attempts = a;
            }
            out.push(QueuedMessage {
                queue,
                envelope,
                state: MessageState::Dead,
            });
        }
        Ok(out)
    }

    async fn queue_is_drained(&self, task: &str) -> StoreResult<bool> {
        self.flush_acks().await?;
        let keys = Keys::new(task);
        let queues = self.queue_names(task).await?;
        if queues.is_empty() {
            return Ok(true);
        }
        let lengths: Vec<u64> = self
            .conn
            .pipeline("bus length", || {
                let mut pipe = redis::pipe();
                for q in &queues {
                    pipe.cmd("XLEN").arg(keys.bus(q));
                }
                pipe
            })
            .await?;
        Ok(lengths.iter().all(|n| *n == 0))
    }
}

/// A failed fetch, as the store reports it.
pub(super) fn fetch_error(e: &redis::RedisError) -> StoreError {
    command_error("bus take", e)
}
