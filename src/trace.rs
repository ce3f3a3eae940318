//! The spans of a run, for OpenTelemetry (`crate::observe::otel` exports
//! them when `OTEL_EXPORTER_OTLP_ENDPOINT` is set): one per task, per agent,
//! per callback, per host call that waits, and one per LLM call following
//! the GenAI semantic conventions (`chat {model}`, `gen_ai.request.model`,
//! `gen_ai.usage.input_tokens`, ...).
//!
//! Every span is at INFO under the target [`TARGET`], which the console
//! log never shows: with no exporter no layer is interested in them, and
//! building one is a cached check that skips its fields.

use tracing::Span;
use tracing::field::Empty;

/// The target of every span here.
pub const TARGET: &str = "orrery::trace";

/// The span of a whole task run in this process.
pub fn task(id: &str, kind: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "task",
        otel.name = %format!("task {id}"),
        orrery.task.id = %id,
        orrery.task.type = %kind,
        orrery.task.status = Empty,
    )
}

/// The span of one agent's life.
pub fn agent(id: &str, role: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "agent",
        otel.name = %format!("agent {id}"),
        orrery.agent.id = %id,
        orrery.agent.role = %role,
    )
}

/// The span of one callback of agent `agent`; `label` is the host's name for
/// it (`start`, `message 'x' from alpha-1`, `watch of 'plan'`), the span's
/// name its kind (`start`, `on_message`, `watch`, ...).
pub fn callback(agent: &str, label: &str) -> Span {
    let kind = if label.starts_with("message") {
        "on_message"
    } else if label.starts_with("watch") {
        "watch"
    } else {
        label
    };
    tracing::info_span!(
        target: TARGET,
        "callback",
        otel.name = %format!("callback {kind}"),
        orrery.agent.id = %agent,
        orrery.callback = %label,
    )
}

/// The span of a host call that may wait (`bus.receive`, `lock.acquire`,
/// `sleep`, `spawn.agent`, ...).
pub fn host_call(name: &'static str) -> Span {
    tracing::info_span!(target: TARGET, "host_call", otel.name = name)
}

/// The span of a call to a Redis-protocol store that waits for its answer
/// (one command, pipeline or script, retries included); `what` says which
/// (`blackboard get 'plan'`). Named `redis` whatever the call, so span names
/// stay few; OpenTelemetry's database conventions for the rest. Only
/// inside a span (a run's): the host's background calls (heartbeats, the
/// journal's writer) would each be a trace of their own.
pub fn store_call(what: &str) -> Span {
    if Span::current().is_none() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "store_call",
        otel.name = "redis",
        otel.kind = "client",
        db.system = "redis",
        orrery.store.call = %what,
    )
}

/// The span of one LLM call to `model` (GenAI semantic conventions); the
/// answer's model and token counts are recorded on it by [`llm_answered`],
/// a failure by [`llm_failed`].
pub fn llm_chat(model: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "llm",
        otel.name = %format!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = %model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        orrery.llm.source = Empty,
        error.type = Empty,
    )
}

/// Records an answer on an [`llm_chat`] span.
pub fn llm_answered(span: &Span, model: &str, source: &str, input: u64, output: u64) {
    span.record("gen_ai.response.model", model);
    // Signed: OTLP has no unsigned integers, and an u64 would go as text.
    span.record("gen_ai.usage.input_tokens", input as i64);
    span.record("gen_ai.usage.output_tokens", output as i64);
    span.record("orrery.llm.source", source);
}

/// Records a failure of kind `kind` on an [`llm_chat`] span.
pub fn llm_failed(span: &Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}
