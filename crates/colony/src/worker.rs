//! `colony worker`: a worker process that takes tasks from the board and runs a
//! command for each (`--exec`, `worker_exec.rs`), or asks a model through the node's
//! LLM gateway (without `--exec`: colony-client's `llm_worker`).
//!
//! The session, its heartbeats, the claims (long polls, tried again while the node
//! is away), the renewal of each task's lease and the report of what the handler
//! decided are the client library's worker loop (`colony_client::Session`); this
//! file is the glue: the flags, the signals, what is said on stderr and the exit
//! status. A task whose claim is lost (cancelled, timed out, reassigned) has its
//! command stopped and the worker goes on; a lost session (the node declared it
//! gone: it missed its heartbeats) stops the worker with exit status 3: register
//! again.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use colony_api::ledger::LedgerView;
use colony_client::{Session, Stop, WorkerReport};

use crate::client::Client;
use crate::Remote;

/// How long a task's handler whose claim was lost may take to stop its command,
/// revoke the command's token and settle what it used.
const LOST_GRACE: Duration = Duration::from_secs(30);

pub struct WorkerOptions {
    pub capabilities: Vec<String>,
    pub exec: Option<String>,
    /// How `exec` runs: isolation and limits.
    pub sandbox: crate::sandbox::SandboxFlags,
    pub poll_ms: u64,
    pub max_tasks: Option<u64>,
    pub model: Option<String>,
    pub profile: Option<String>,
}

impl WorkerOptions {
    /// The client library's options for these flags: claims wait on the node for
    /// work (a long poll); `--poll-ms` is the pause between two that found none.
    fn for_the_loop(&self) -> colony_client::WorkerOptions {
        colony_client::WorkerOptions {
            capabilities: self.capabilities.clone(),
            idle_pause: Duration::from_millis(self.poll_ms.max(10)),
            max_tasks: self.max_tasks,
            model: self.model.clone(),
            profile: self.profile.clone(),
            lost_grace: LOST_GRACE,
            ..colony_client::WorkerOptions::default()
        }
    }
}

/// A stop asked at SIGTERM or Ctrl-C: the task at hand is finished, then the
/// session left.
fn stop_on_signal(stop: &Stop) -> anyhow::Result<()> {
    let stop = stop.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.stop();
    });
    Ok(())
}

pub async fn run(options: WorkerOptions, remote: Remote) -> anyhow::Result<ExitCode> {
    let sandbox = match &options.exec {
        Some(_) => Some(crate::sandbox::Sandbox::resolve(options.sandbox.clone())?),
        None => None,
    };
    let model = options.model.clone().unwrap_or_else(|| "auto".to_string());
    let cli = Client::new(&remote)?;
    let client = Client::library(&remote)?;
    let for_the_loop = options.for_the_loop();
    let mut session = Session::register(&client, &for_the_loop)
        .await
        .map_err(|error| anyhow!("cannot register a worker session: {error}"))?;
    let stop = Stop::default();
    stop_on_signal(&stop)?;
    if let Some(position) = session.queued() {
        eprintln!("colony worker: queued (position {position}); waiting for a place");
        if !session.admitted(&stop).await? {
            eprintln!("colony worker: stopped before a place freed up");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let worker = session.worker();
    eprintln!(
        "colony worker: session {worker} registered (capabilities: {})",
        options.capabilities.join(",")
    );
    // Who this worker is, asked once: the tokens its commands get are made for it.
    let me: anyhow::Result<String> = cli
        .get_as::<LedgerView>("/v1/ledger/me")
        .await
        .map(|ledger| ledger.principal);
    let (cli, me, model) = (&cli, &me, model.as_str());
    let ran = match (&options.exec, &sandbox) {
        (Some(exec), Some(sandbox)) => {
            session
                .run(&for_the_loop, &stop, move |work| {
                    crate::worker_exec::work(cli, me, exec, sandbox, work)
                })
                .await
        }
        _ => {
            session
                .run(&for_the_loop, &stop, move |work| {
                    colony_client::llm_worker::work(model, work)
                })
                .await
        }
    };
    Ok(ended(worker, ran))
}

/// What the worker says as it ends, and its exit status: 0 when it stopped as
/// asked (its session left), 3 when its session was lost or the node refused it.
fn ended(worker: u64, ran: Result<WorkerReport, colony_client::Error>) -> ExitCode {
    match ran {
        Ok(report) if report.session_lost => {
            eprintln!(
                "colony worker: stopping: session {worker} was declared lost (it missed its heartbeats, or was made to leave); register again{}",
                summary(&report)
            );
            ExitCode::from(3)
        }
        Ok(report) => {
            eprintln!("colony worker: session {worker} left{}", summary(&report));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("colony worker: stopping: {error}");
            ExitCode::from(3)
        }
    }
}

/// `after N task(s): ...`, what the session did.
fn summary(report: &WorkerReport) -> String {
    let tasks = report.completed + report.failed + report.released + report.settled + report.lost;
    format!(
        " after {tasks} task(s): {} completed, {} settled by the model, {} failed, {} given back, {} lost; {} claim(s) tried again",
        report.completed,
        report.settled,
        report.failed,
        report.released,
        report.lost,
        report.claim_retries
    )
}
