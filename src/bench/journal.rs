//! What the run journal costs: the embedded store's blackboard, message and
//! spawn figures with the journal written to a file (every event built,
//! numbered, serialized and written), beside the same figures with it off,
//! taken in turns over several rounds (off-on, then on-off) so a change in
//! the machine's load hits both alike. The aim is a drop of at most 10%.
//!
//! Beside the rates, the CPU time of the whole process per operation (the
//! agents', the journal writer's and the kernel's for the file): on a
//! machine whose cores are shared with other work, the rates move with the
//! load from run to run, while the CPU an operation costs hardly does.

use std::path::PathBuf;

use serde::Serialize;

use super::embedded::{Sizes, blackboard_ops_journaled, messages_journaled, spawn_times_journaled};
use crate::error::{Error, Result};

/// Rounds of a full run: the drops are of medians, so an odd count. Many
/// short rounds rather than a few long ones: on the shared 2-core VM a
/// round's figures move by tens of percent, independently from round to
/// round (a message figure of one process went 575k, 1,171k, 822k/s in
/// turns), and the median of fifteen moves far less than the median of five.
pub const ROUNDS: usize = 15;

/// The sizes of a full run's rounds: a third of the embedded figures' full
/// sizes, so fifteen rounds take about as long as five full ones did.
pub fn round_sizes(full: Sizes) -> Sizes {
    Sizes {
        blackboard_loops: full.blackboard_loops / 3,
        messages: full.messages / 3,
        spawns: full.spawns / 3,
        ..full
    }
}

/// The figures with the journal off and on, per round, and the drops of
/// their medians.
#[derive(Debug, Clone, Serialize)]
pub struct JournalCost {
    /// Rounds taken (each: off then on, or on then off, in turns).
    pub rounds: usize,
    /// `blackboard.set` + `get` per second, journal off, per round.
    pub blackboard_off: Vec<f64>,
    /// The same with the journal on.
    pub blackboard_on: Vec<f64>,
    /// Messages per second, journal off, per round.
    pub messages_off: Vec<f64>,
    /// The same with the journal on.
    pub messages_on: Vec<f64>,
    /// CPU time of the process per blackboard op (µs), journal off, per round.
    pub blackboard_cpu_us_off: Vec<f64>,
    /// The same with the journal on.
    pub blackboard_cpu_us_on: Vec<f64>,
    /// CPU time of the process per message (µs), journal off, per round.
    pub messages_cpu_us_off: Vec<f64>,
    /// The same with the journal on.
    pub messages_cpu_us_on: Vec<f64>,
    /// Spawn p50 (µs), journal off, per round.
    pub spawn_p50_us_off: Vec<f64>,
    /// The same with the journal on.
    pub spawn_p50_us_on: Vec<f64>,
    /// Drop of the median blackboard figure with the journal on (%).
    pub blackboard_drop_pct: f64,
    /// Drop of the median message figure with the journal on (%).
    pub messages_drop_pct: f64,
    /// Growth of the median spawn time with the journal on (%).
    pub spawn_growth_pct: f64,
    /// Growth of the median CPU per blackboard op with the journal on (%).
    pub blackboard_cpu_growth_pct: f64,
    /// Growth of the median CPU per message with the journal on (%).
    pub messages_cpu_growth_pct: f64,
}

/// One run of the message figure alone, with the journal off or written to
/// a scratch file: messages per second and the process's CPU per message
/// (µs), start-up included. For profiling the journal's cost (hidden
/// `orrery bench --messages-only N [--journal-on]`): run it under callgrind
/// or `perf` at two sizes, and the difference is the cost of the messages.
pub async fn messages_once(count: u64, journaled: bool) -> Result<(f64, f64)> {
    once(count, journaled, |file| async move {
        messages_journaled(count, file.as_deref()).await
    })
    .await
}

/// One run of the blackboard figure alone (`loops` set-get pairs), as
/// [`messages_once`] (hidden `orrery bench --blackboard-only N
/// [--journal-on]`): operations per second and the process's CPU per
/// operation (µs), start-up included.
pub async fn blackboard_once(loops: u64, journaled: bool) -> Result<(f64, f64)> {
    once(2 * loops, journaled, |file| async move {
        blackboard_ops_journaled(loops, file.as_deref()).await
    })
    .await
}

/// Runs `figure` once, with the journal written to a scratch file when
/// `journaled`: its rate and the process's CPU per one of its `ops` (µs).
async fn once<F>(
    ops: u64,
    journaled: bool,
    figure: impl FnOnce(Option<PathBuf>) -> F,
) -> Result<(f64, f64)>
where
    F: std::future::Future<Output = Result<f64>>,
{
    let dir = std::env::temp_dir().join(format!("orrery-bench-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Coordination(format!("benchmark journal {}: {e}", dir.display())))?;
    let file = dir.join("journal.jsonl");
    let started = super::cpu_seconds();
    let rate = figure(journaled.then(|| file.clone())).await;
    let cpu_us = (super::cpu_seconds() - started) * 1e6 / ops.max(1) as f64;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((rate?, cpu_us))
}

/// Measures `rounds` rounds of the three figures, journal off then on.
pub async fn journal_cost(sizes: Sizes, rounds: usize) -> Result<JournalCost> {
    let dir = std::env::temp_dir().join(format!("orrery-bench-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Coordination(format!("benchmark journal {}: {e}", dir.display())))?;
    let file = dir.join("journal.jsonl");
    let result = measure(sizes, rounds, &file).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(sizes: Sizes, rounds: usize, file: &std::path::Path) -> Result<JournalCost> {
    let mut c = JournalCost {
        rounds,
        blackboard_off: Vec::new(),
        blackboard_on: Vec::new(),
        messages_off: Vec::new(),
        messages_on: Vec::new(),
        spawn_p50_us_off: Vec::new(),
        spawn_p50_us_on: Vec::new(),
        blackboard_cpu_us_off: Vec::new(),
        blackboard_cpu_us_on: Vec::new(),
        messages_cpu_us_off: Vec::new(),
        messages_cpu_us_on: Vec::new(),
        blackboard_drop_pct: 0.0,
        messages_drop_pct: 0.0,
        spawn_growth_pct: 0.0,
        blackboard_cpu_growth_pct: 0.0,
        messages_cpu_growth_pct: 0.0,
    };
    for round in 0..rounds {
        let mut sides = [
            (
                None,
                &mut c.blackboard_off,
                &mut c.messages_off,
                &mut c.spawn_p50_us_off,
                &mut c.blackboard_cpu_us_off,
                &mut c.messages_cpu_us_off,
            ),
            (
                Some(file),
                &mut c.blackboard_on,
                &mut c.messages_on,
                &mut c.spawn_p50_us_on,
                &mut c.blackboard_cpu_us_on,
                &mut c.messages_cpu_us_on,
            ),
        ];
        // Off then on, then on then off: a load that grows or shrinks over
        // the run (another build starting) weighs on both sides alike.
        if round % 2 == 1 {
            sides.reverse();
        }
        for (journal, bb, msgs, spawn, bb_cpu, msgs_cpu) in sides {
            // Each figure writes a new journal: the last one is removed
            // here, outside the timed window (creating the file over it
            // would drop its hundreds of MB of page cache in the next
            // figure's CPU time).
            let fresh = || {
                let _ = std::fs::remove_file(file);
            };
            fresh();
            let started = super::cpu_seconds();
            bb.push(blackboard_ops_journaled(sizes.blackboard_loops, journal).await?);
            let ops = (2 * sizes.blackboard_loops).max(1) as f64;
            bb_cpu.push((super::cpu_seconds() - started) * 1e6 / ops);
            fresh();
            let started = super::cpu_seconds();
            msgs.push(messages_journaled(sizes.messages, journal).await?);
            let count = sizes.messages.max(1) as f64;
            msgs_cpu.push((super::cpu_seconds() - started) * 1e6 / count);
            fresh();
            let (p50, _) =
                spawn_times_journaled(sizes.spawns, sizes.warmup_spawns, journal).await?;
            spawn.push(p50);
        }
    }
    let drop = |off: &[f64], on: &[f64]| 100.0 * (1.0 - median(on) / median(off));
    c.blackboard_drop_pct = drop(&c.blackboard_off, &c.blackboard_on);
    c.messages_drop_pct = drop(&c.messages_off, &c.messages_on);
    let growth = |off: &[f64], on: &[f64]| 100.0 * (median(on) / median(off) - 1.0);
    c.spawn_growth_pct = growth(&c.spawn_p50_us_off, &c.spawn_p50_us_on);
    c.blackboard_cpu_growth_pct = growth(&c.blackboard_cpu_us_off, &c.blackboard_cpu_us_on);
    c.messages_cpu_growth_pct = growth(&c.messages_cpu_us_off, &c.messages_cpu_us_on);
    Ok(c)
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One line per figure: medians off and on, the drop, and the spread (min–max).
pub fn table(c: &JournalCost) -> String {
    let spread = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{min:.0}-{max:.0}")
    };
    let verdict = |pct: f64| if pct <= 10.0 { "ok" } else { "MISSED" };
    let mut s = format!(
        "journal on (to a file), {} round(s), median off / on (spread):\n",
        c.rounds
    );
    s.push_str(&format!(
        "  {:<40} {:>10.0} / {:<10.0} ({} / {})   drop {:>5.1}%  aim <= 10%  {}\n",
        "blackboard ops/s",
        median(&c.blackboard_off),
        median(&c.blackboard_on),
        spread(&c.blackboard_off),
        spread(&c.blackboard_on),
        c.blackboard_drop_pct,
        verdict(c.blackboard_drop_pct)
    ));
    s.push_str(&format!(
        "  {:<40} {:>10.0} / {:<10.0} ({} / {})   drop {:>5.1}%  aim <= 10%  {}\n",
        "messages/s",
        median(&c.messages_off),
        median(&c.messages_on),
        spread(&c.messages_off),
        spread(&c.messages_on),
        c.messages_drop_pct,
        verdict(c.messages_drop_pct)
    ));
    let spread3 = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{min:.3}-{max:.3}")
    };
    for (what, off, on, pct) in [
        (
            "CPU per blackboard op (us, process)",
            &c.blackboard_cpu_us_off,
            &c.blackboard_cpu_us_on,
            c.blackboard_cpu_growth_pct,
        ),
        (
            "CPU per message (us, process)",
            &c.messages_cpu_us_off,
            &c.messages_cpu_us_on,
            c.messages_cpu_growth_pct,
        ),
    ] {
        s.push_str(&format!(
            "  {:<40} {:>10.3} / {:<10.3} ({} / {})   growth {:>5.1}%\n",
            what,
            median(off),
            median(on),
            spread3(off),
            spread3(on),
            pct
        ));
    }
    s.push_str(&format!(
        "  {:<40} {:>10.0} / {:<10.0} ({} / {} us)   growth {:>5.1}%\n",
        "spawn p50 (us)",
        median(&c.spawn_p50_us_off),
        median(&c.spawn_p50_us_on),
        spread(&c.spawn_p50_us_off),
        spread(&c.spawn_p50_us_on),
        c.spawn_growth_pct
    ));
    s
}
