//! The launcher's main loop: register, then accept runs from the poll,
//! keep leases alive with heartbeats, obey instructions, drain on SIGTERM,
//! deregister and exit.
//!
//! The poll and the heartbeat run as their own tasks and report to this
//! loop over a channel. The poll is never cancelled mid-request: a poll
//! dropped just as the server leased a run would strand that run until its
//! lease expired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_wire::worker::{
    HeartbeatRequest, HeldLease, Instructions, KnownInstructions, PollRequest, RunLease,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{CallError, ControlPlane, RetryLog};
use crate::config::Config;
use crate::executor::Executor;
use crate::exit;
use crate::orphans::{InFlight, InFlightRuns};
use crate::register::SessionKeeper;
use crate::run::{self, Control, RunContext};

const POLL_WAIT: Duration = Duration::from_secs(20);

enum Event {
    Leases(Vec<RunLease>),
    Instructions(Instructions),
    /// The control plane no longer accepts this worker.
    Refused(CallError),
}

/// A run in flight, under one lease. Keyed by lease ID, never by run ID: a
/// tracked run's plan and apply are two leases of one run, and may overlap
/// on one launcher (the plan's task still ending as the apply arrives).
struct RunHandle {
    run_id: String,
    control: mpsc::UnboundedSender<Control>,
}

/// What the agent, the poll and the heartbeat share.
struct Shared {
    runs: Mutex<HashMap<String, RunHandle>>,
    running: AtomicU32,
    /// Draining by our own decision (signal, pool cycle): we exit when idle.
    leaving: AtomicBool,
    /// Drained by an operator through the API: we stay, but take no runs.
    drained: AtomicBool,
    /// A poll that may bring leases is in flight.
    poll_with_slots: AtomicBool,
    /// A run ended: a poll sent with no free slot should be sent again.
    slot_freed: tokio::sync::Notify,
    /// Runs we were told to stop and still run.
    stopping: Mutex<Vec<String>>,
}

impl Shared {
    fn free_slots(&self, max: u32) -> u32 {
        if self.leaving.load(Ordering::Acquire) || self.drained.load(Ordering::Acquire) {
            0
        } else {
            max.saturating_sub(self.running.load(Ordering::Acquire))
        }
    }

    fn held_leases(&self) -> Vec<HeldLease> {
        let runs = self.runs.lock().expect("runs lock");
        runs.iter()
            .map(|(lease_id, h)| HeldLease {
                run_id: h.run_id.clone(),
                lease_id: lease_id.clone(),
            })
            .collect()
    }

    /// Tells every lease of the run (there is one, but for a plan ending as
    /// its apply starts).
    fn control(&self, run_id: &str, message: Control) {
        for handle in self.runs.lock().expect("runs lock").values() {
            if handle.run_id == run_id {
                let _ = handle.control.send(message.clone());
            }
        }
    }

    /// The stops this launcher already acts on, for the poll.
    fn known(&self) -> KnownInstructions {
        KnownInstructions {
            stop: self.stopping.lock().expect("stopping lock").clone(),
            exit: self.leaving.load(Ordering::Acquire),
        }
    }

    fn control_all(&self, message: Control) {
        for handle in self.runs.lock().expect("runs lock").values() {
            let _ = handle.control.send(message.clone());
        }
    }
}

pub async fn run(config: Config) -> u8 {
    let in_flight = match InFlightRuns::open(&config.work_dir) {
        Ok(in_flight) => in_flight,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("gantry-launcher: configuration error: {message}");
            return exit::CONFIG;
        }
    };
    let client = match ControlPlane::new(&config) {
        Ok(client) => Arc::new(client),
        Err(error) => {
            eprintln!("gantry-launcher: configuration error: GANTRY_ADDITIONAL_ROOT_CAS: {error}");
            return exit::CONFIG;
        }
    };
    // What a dead predecessor on this work directory left in flight: we
    // register as the worker it was, and end those runs ourselves.
    let orphans = in_flight.left_behind();
    let keep: Vec<String> = orphans
        .iter()
        .map(|o| crate::orphans::lease_key(&o.lease))
        .collect();
    // Before registering: what a crashed predecessor left running (run
    // containers) stops before its runs are reported failed.
    let executor = match Executor::open(&config, &keep).await {
        Ok(executor) => executor,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("gantry-launcher: configuration error: {message}");
            return exit::CONFIG;
        }
    };

    let resume = orphans
        .iter()
        .map(|o| o.worker_id.clone())
        .find(|w| !w.is_empty());
    // Records of an older launcher hold no worker to resume: the control
    // plane ends those runs at registration.
    let reported: Vec<_> = orphans
        .iter()
        .filter(|o| o.worker_id.is_empty())
        .map(InFlight::orphan)
        .collect();
    let registration =
        match crate::register::register(&client, &config, &reported, resume.as_deref()).await {
            Ok(registration) => registration,
            Err(error) => return refused_at_start(&config, &error),
        };
    // Before "registered" is logged: a SIGTERM from then on drains. (Until
    // registration succeeds, a signal still ends the launcher at once.)
    let mut sigterm = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
    let mut sigint = signal(SignalKind::interrupt()).expect("a SIGINT handler installs");
    tracing::info!(
        worker_id = %registration.worker_id,
        pool_id = %config.token.pool_id,
        url = %config.token.url,
        executor = ?config.executor,
        max_concurrent_runs = config.max_concurrent_runs,
        "registered; waiting for runs"
    );

    let shared = Arc::new(Shared {
        runs: Mutex::new(HashMap::new()),
        running: AtomicU32::new(0),
        leaving: AtomicBool::new(false),
        drained: AtomicBool::new(false),
        poll_with_slots: AtomicBool::new(false),
        slot_freed: tokio::sync::Notify::new(),
        stopping: Mutex::new(Vec::new()),
    });
    let (events, mut inbox) = mpsc::unbounded_channel();
    let heartbeat_interval = Duration::from_millis(registration.heartbeat_interval_ms.max(100));
    let keeper = Arc::new(SessionKeeper::new(
        config.clone(),
        registration.worker_id.clone(),
    ));
    let poll_task = tokio::spawn(poll_loop(
        client.clone(),
        keeper.clone(),
        shared.clone(),
        config.max_concurrent_runs,
        events.clone(),
    ));
    let heartbeat_task = tokio::spawn(heartbeat_loop(
        client.clone(),
        keeper.clone(),
        shared.clone(),
        heartbeat_interval,
        events.clone(),
    ));
    let ctx = Arc::new(RunContext {
        config: config.clone(),
        client: client.clone(),
        in_flight,
        executor,
        keeper: keeper.clone(),
    });

    let mut signals_seen = 0;
    let mut tasks = JoinSet::new();
    let mut exit_code = exit::OK;

    let resumed = resume.as_deref() == Some(registration.worker_id.as_str());
    for orphan in orphans {
        tracing::warn!(run_id = %orphan.lease.run_id, resumed, "a run left in flight by a previous launcher on this work directory");
        // Held while it is recovered, so heartbeats keep its lease alive.
        let (control, _ignored) = mpsc::unbounded_channel();
        let lease_id = orphan.lease.lease_id.clone();
        shared.runs.lock().expect("runs lock").insert(
            lease_id.clone(),
            RunHandle {
                run_id: orphan.lease.run_id.clone(),
                control,
            },
        );
        let (ctx, shared) = (ctx.clone(), shared.clone());
        tasks.spawn(async move {
            crate::recovery::recover(&ctx, &orphan, resumed).await;
            shared.runs.lock().expect("runs lock").remove(&lease_id);
        });
    }

    loop {
        let leaving = shared.leaving.load(Ordering::Acquire);
        if leaving && tasks.is_empty() && !shared.poll_with_slots.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            _ = async { tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} } } => {
                signals_seen += 1;
                if signals_seen == 1 {
                    tracing::info!(runs_in_flight = tasks.len(), "signal received: draining (a second signal stops the runs in flight)");
                    start_leaving(&client, &shared).await;
                } else {
                    tracing::warn!(runs_in_flight = tasks.len(), "second signal: stopping the runs in flight");
                    shared.control_all(Control::Stop("the launcher was told to stop".into()));
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Some(event) = inbox.recv() => match event {
                Event::Leases(leases) => {
                    for lease in leases {
                        let (control, receiver) = mpsc::unbounded_channel();
                        shared.runs.lock().expect("runs lock").insert(lease.lease_id.clone(), RunHandle { run_id: lease.run_id.clone(), control });
                        let ctx = ctx.clone();
                        let shared = shared.clone();
                        tasks.spawn(async move {
                            let (run_id, lease_id) = (lease.run_id.clone(), lease.lease_id.clone());
                            run::execute(ctx, lease, receiver).await;
                            shared.runs.lock().expect("runs lock").remove(&lease_id);
                            shared.stopping.lock().expect("stopping lock").retain(|id| *id != run_id);
                            shared.running.fetch_sub(1, Ordering::AcqRel);
                            shared.slot_freed.notify_one();
                        });
                    }
                }
                Event::Instructions(instructions) => {
                    for run_id in &instructions.stop {
                        let mut stopping = shared.stopping.lock().expect("stopping lock");
                        if !stopping.contains(run_id) {
                            stopping.push(run_id.clone());
                            drop(stopping);
                            shared.control(run_id, Control::Stop("a user stopped the run".into()));
                        }
                    }
                    for run_id in &instructions.abandon {
                        shared.control(run_id, Control::Abandon);
                    }
                    if shared.drained.swap(instructions.drain, Ordering::AcqRel) != instructions.drain {
                        tracing::info!(drained = instructions.drain, "drain changed by an operator");
                        shared.slot_freed.notify_one();
                    }
                    if instructions.exit && !shared.leaving.load(Ordering::Acquire) {
                        tracing::info!("the pool was cycled: finishing the runs in flight, then exiting");
                        start_leaving(&client, &shared).await;
                    }
                }
                Event::Refused(error) => {
                    tracing::error!(%error, "the control plane refused this worker; abandoning the runs in flight and exiting");
                    shared.control_all(Control::Abandon);
                    shared.leaving.store(true, Ordering::Release);
                    shared.poll_with_slots.store(false, Ordering::Release);
                    poll_task.abort();
                    exit_code = exit::CREDENTIALS;
                }
            },
        }
    }
    poll_task.abort();
    heartbeat_task.abort();
    if exit_code == exit::OK {
        if let Err(error) = client.deregister().await {
            tracing::warn!(%error, "cannot deregister; the control plane will mark this worker lost");
        }
        tracing::info!("drained; exiting");
    }
    exit_code
}

/// Stop taking runs, and tell the control plane at once so an open poll
/// returns instead of leasing us more work.
async fn start_leaving(client: &ControlPlane, shared: &Shared) {
    shared.leaving.store(true, Ordering::Release);
    let request = HeartbeatRequest {
        runs: shared.held_leases(),
        draining: true,
    };
    if let Err(error) = client.heartbeat(&request, Duration::from_secs(15)).await {
        tracing::warn!(%error, "cannot tell the control plane about the drain");
        // If it cannot hear us, it cannot lease us anything either.
        shared.poll_with_slots.store(false, Ordering::Release);
    }
}

fn refused_at_start(config: &Config, error: &CallError) -> u8 {
    let (code, what) = match error.code() {
        Some("version_refused") => (
            exit::VERSION,
            "the control plane refused this launcher's version",
        ),
        Some("unauthorized") => (
            exit::CREDENTIALS,
            "the control plane refused the pool credentials",
        ),
        _ if matches!(error, CallError::Certificate(_)) => {
            (exit::FAILURE, "the control plane's certificate is refused")
        }
        _ if matches!(error, CallError::Unreachable(_)) => {
            (exit::FAILURE, "cannot reach the control plane")
        }
        _ => (exit::FAILURE, "registration failed"),
    };
    tracing::error!(url = %config.token.url, %error, "{what}");
    eprintln!(
        "gantry-launcher: {what} at {} (from GANTRY_TOKEN): {error}",
        config.token.url
    );
    code
}

async fn poll_loop(
    client: Arc<ControlPlane>,
    keeper: Arc<SessionKeeper>,
    shared: Arc<Shared>,
    max: u32,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut delay = Duration::from_millis(100);
    let mut failures = RetryLog::new("poll");
    loop {
        let free_slots = shared.free_slots(max);
        shared
            .poll_with_slots
            .store(free_slots > 0, Ordering::Release);
        let request = PollRequest {
            free_slots,
            wait_ms: POLL_WAIT.as_millis() as u64,
            known: shared.known(),
        };
        let generation = client.session_generation();
        let result = if free_slots == 0 {
            // A poll without free slots cannot bring leases, so it is safe
            // to abandon when a slot frees up: poll again, asking for work.
            tokio::select! {
                result = client.poll(&request) => result,
                _ = shared.slot_freed.notified() => continue,
            }
        } else {
            client.poll(&request).await
        };
        match result {
            Ok(response) => {
                delay = Duration::from_millis(100);
                failures.succeeded();
                if !response.leases.is_empty() {
                    shared
                        .running
                        .fetch_add(response.leases.len() as u32, Ordering::AcqRel);
                    let _ = events.send(Event::Leases(response.leases));
                }
                let _ = events.send(Event::Instructions(response.instructions));
                shared.poll_with_slots.store(false, Ordering::Release);
            }
            Err(error) if error.code() == Some("unauthorized") => {
                shared.poll_with_slots.store(false, Ordering::Release);
                if let Err(error) = keeper.renew(&client, generation).await {
                    let _ = events.send(Event::Refused(error));
                    return;
                }
            }
            Err(error) => {
                shared.poll_with_slots.store(false, Ordering::Release);
                failures.failed(&error);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn heartbeat_loop(
    client: Arc<ControlPlane>,
    keeper: Arc<SessionKeeper>,
    shared: Arc<Shared>,
    interval: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = RetryLog::new("heartbeat");
    loop {
        ticker.tick().await;
        let request = HeartbeatRequest {
            runs: shared.held_leases(),
            draining: shared.leaving.load(Ordering::Acquire),
        };
        let generation = client.session_generation();
        match client
            .heartbeat(
                &request,
                interval.clamp(Duration::from_secs(1), Duration::from_secs(15)),
            )
            .await
        {
            Ok(response) => {
                failures.succeeded();
                if let Some(token) = response.session_token {
                    client.set_session(token);
                }
                if !response.instructions.is_empty() || shared.drained.load(Ordering::Acquire) {
                    let _ = events.send(Event::Instructions(response.instructions));
                }
            }
            Err(error) if error.code() == Some("unauthorized") => {
                if let Err(error) = keeper.renew(&client, generation).await {
                    let _ = events.send(Event::Refused(error));
                    return;
                }
                // Renew the leases under the new session at once.
                ticker.reset_immediately();
            }
            Err(error) => {
                failures.failed(&error);
            }
        }
    }
}
