//! The supervisor: keeps local worker processes alive within the limits.
//!
//! Each profile (`supervisor.toml`, or `colony up --workers N --worker-exec CMD`) runs a
//! command as worker processes under one AI principal of its own. Every 200 ms the
//! supervisor reaps exited processes (a crash is replaced after an exponential backoff;
//! too many crashes in a window stop the profile), computes the desired count from the
//! claimable tasks the profile can do plus the tasks it holds (between `min` and `max`,
//! and never past `active_workers`'s hard value), spawns one process at a time with a
//! cooldown, and stops idle processes (SIGTERM: the worker finishes its task and
//! leaves) once there have been more than needed for `idle_shutdown`. Every spawn,
//! replacement, crash and despawn is a justified decision in the log.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use colony_kernel::tasks::TaskStatus;
use colony_kernel::{
    CommandBody, CreatePrincipal, PrincipalId, PrincipalKind, Role, State, SupervisorAction,
};
use tokio::sync::watch;

use crate::auth::{hash_token, new_token};
use crate::sequencer::Submitter;

pub use crate::genesis::{Profile, SupervisorConfig};
pub use colony_api::workers::ProfileStatus;

pub type SupervisorStatus = Arc<Mutex<Vec<ProfileStatus>>>;

struct Process {
    child: tokio::process::Child,
    pid: u32,
    despawning: bool,
}

struct Running {
    profile: Profile,
    principal: PrincipalId,
    address: String,
    token: String,
    processes: Vec<Process>,
    crashes: VecDeque<Instant>,
    replacements_due: u32,
    next_spawn_at: Instant,
    surplus_since: Option<Instant>,
    halted: bool,
    desired: u32,
}

/// How the supervised workers reach the node: its URL, and the CA file that
/// verifies its certificate when it serves TLS (`COLONY_CA_FILE` for the workers).
#[derive(Clone, Debug)]
pub(crate) struct NodeAddress {
    pub url: String,
    pub ca_file: Option<PathBuf>,
}

/// Starts the supervisor task; it stops (terminating its processes) when `stop` changes.
pub(crate) async fn spawn(
    config: SupervisorConfig,
    data_dir: PathBuf,
    url: NodeAddress,
    state: Arc<RwLock<State>>,
    submitter: Submitter,
    mut stop: watch::Receiver<bool>,
    status: SupervisorStatus,
) -> Result<tokio::task::JoinHandle<()>, crate::NodeError> {
    let mut running = Vec::new();
    for profile in config.profiles.clone() {
        let (principal, address, token) =
            profile_principal(&profile, &data_dir, &state, &submitter).await?;
        running.push(Running {
            profile,
            principal,
            address,
            token,
            processes: Vec::new(),
            crashes: VecDeque::new(),
            replacements_due: 0,
            next_spawn_at: Instant::now(),
            surplus_since: None,
            halted: false,
            desired: 0,
        });
    }
    let shown = status;
    let handle = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.changed() => break,
            }
            for profile in &mut running {
                supervise(profile, &config, &url, &state, &submitter).await;
            }
            *shown.lock().expect("status lock") =
                running.iter().map(|r| r.status(&config)).collect();
        }
        for profile in &mut running {
            for process in &mut profile.processes {
                terminate(process.pid);
            }
            for process in &mut profile.processes {
                if tokio::time::timeout(Duration::from_secs(5), process.child.wait())
                    .await
                    .is_err()
                {
                    let _ = process.child.kill().await;
                }
            }
        }
    });
    Ok(handle)
}

impl Running {
    fn status(&self, config: &SupervisorConfig) -> ProfileStatus {
        let window = Duration::from_millis(config.crash_loop_window_ms);
        ProfileStatus {
            name: self.profile.name.clone(),
            principal: self.address.clone(),
            pids: self
                .processes
                .iter()
                .filter(|p| !p.despawning)
                .map(|p| p.pid)
                .collect(),
            desired: self.desired,
            min: self.profile.min,
            max: self.profile.max,
            crashes_in_window: self.crashes.iter().filter(|c| c.elapsed() < window).count(),
            halted: self.halted,
        }
    }
}

/// The profile's principal: created at first start, its token kept in the data directory.
async fn profile_principal(
    profile: &Profile,
    data_dir: &std::path::Path,
    state: &Arc<RwLock<State>>,
    submitter: &Submitter,
) -> Result<(PrincipalId, String, String), crate::NodeError> {
    let io = |context: String| move |source| crate::NodeError::Io { context, source };
    let dir = data_dir.join("supervisor");
    std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let file = dir.join(format!("{}.token", profile.name));
    if let Ok(token) = std::fs::read_to_string(&file) {
        let token = token.trim().to_string();
        if let Some(principal) = state
            .read()
            .expect("state lock")
            .principal_by_token(&hash_token(&token))
        {
            return Ok((principal.id, principal.address.clone(), token));
        }
    }
    let token = new_token();
    crate::private_file::write_private(&file, format!("{token}\n").as_bytes())
        .map_err(io(format!("cannot write {}", file.display())))?;
    let mut request = CreatePrincipal::new(
        format!("supervisor/{}", profile.name),
        PrincipalKind::Ai,
        hash_token(&token),
    );
    request.roles = vec![Role::Member];
    let justification = format!(
        "the supervisor runs profile {} under a principal of its own",
        profile.name
    );
    let outcome = submitter
        .submit(
            PrincipalId::SYSTEM,
            justification,
            CommandBody::CreatePrincipal(request),
        )
        .await
        .map_err(|error| crate::NodeError::Io {
            context: "supervisor".into(),
            source: std::io::Error::other(error.message),
        })?;
    match outcome.primary.effect {
        colony_kernel::Effect::PrincipalCreated { id, address, .. } => Ok((id, address, token)),
        _ => Err(crate::NodeError::Io {
            context: format!("supervisor profile {}", profile.name),
            source: std::io::Error::other(format!(
                "its principal was not created: {}",
                crate::error::explain(&outcome.primary.reason)
            )),
        }),
    }
}

async fn record(
    submitter: &Submitter,
    profile: &str,
    action: SupervisorAction,
    pid: Option<u32>,
    justification: String,
) {
    tracing::info!(
        "supervisor: {} {profile} {pid:?}: {justification}",
        action.name()
    );
    // What the supervisor did happened: it is recorded, sent until decided.
    let recorded = submitter
        .submit_until_decided(
            PrincipalId::SYSTEM,
            justification,
            CommandBody::Supervise {
                profile: profile.to_string(),
                action,
                pid,
            },
            colony_pipeline::Answered::WhenDurable,
        )
        .await;
    if recorded.is_err() {
        tracing::warn!("supervisor: the node is stopping; {profile}'s step was not recorded");
    }
}

fn terminate(pid: u32) {
    // SIGTERM: the worker finishes its task, leaves its session and exits.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

async fn supervise(
    run: &mut Running,
    config: &SupervisorConfig,
    url: &NodeAddress,
    state: &Arc<RwLock<State>>,
    submitter: &Submitter,
) {
    let now = Instant::now();
    let name = run.profile.name.clone();
    // Reap.
    let mut index = 0;
    while index < run.processes.len() {
        let exited = run.processes[index].child.try_wait().ok().flatten();
        let Some(status) = exited else {
            index += 1;
            continue;
        };
        let process = run.processes.remove(index);
        if process.despawning {
            continue;
        }
        run.crashes.push_back(now);
        let window = Duration::from_millis(config.crash_loop_window_ms);
        while run
            .crashes
            .front()
            .is_some_and(|c| now.duration_since(*c) > window)
        {
            run.crashes.pop_front();
        }
        let crashes = run.crashes.len() as u32;
        record(
            submitter,
            &name,
            SupervisorAction::Crash,
            Some(process.pid),
            format!(
                "worker process {} exited on its own ({status})",
                process.pid
            ),
        )
        .await;
        if crashes >= config.crash_loop_crashes {
            run.halted = true;
            let why = format!("{crashes} crashes within {} ms: profile {name} is not restarted until the node restarts", config.crash_loop_window_ms);
            record(submitter, &name, SupervisorAction::CrashLoop, None, why).await;
        } else {
            run.replacements_due += 1;
            let backoff = config
                .restart_backoff_base_ms
                .saturating_mul(1 << (crashes - 1).min(20))
                .min(config.restart_backoff_max_ms);
            run.next_spawn_at = run.next_spawn_at.max(now + Duration::from_millis(backoff));
        }
    }
    // Desired count, from the board and the limits.
    let (claimable, held, room) = {
        let state = state.read().expect("state lock");
        let offered: std::collections::BTreeSet<&str> = run
            .profile
            .capabilities
            .iter()
            .map(String::as_str)
            .collect();
        let claimable = state
            .tasks_with_status_after(TaskStatus::Pending, None)
            .filter(|t| t.capabilities.iter().all(|c| offered.contains(c.as_str())))
            .take(run.profile.max as usize)
            .count() as u32;
        let held = state
            .tasks_with_status_after(TaskStatus::Claimed, None)
            .chain(state.tasks_with_status_after(TaskStatus::InProgress, None))
            .filter(|t| t.lease.as_ref().is_some_and(|l| l.holder == run.principal))
            .count() as u32;
        let room = state
            .limit_named(colony_kernel::LimitName::ActiveWorkers)
            .map_or(u64::MAX, |l| {
                l.spec.hard.map_or(u64::MAX, |h| h.saturating_sub(l.usage))
            });
        (claimable, held, room)
    };
    let desired = (claimable + held).clamp(run.profile.min, run.profile.max);
    run.desired = desired;
    let live = run.processes.iter().filter(|p| !p.despawning).count() as u32;
    if !run.halted && live < desired && now >= run.next_spawn_at && room > 0 {
        let replacing = run.replacements_due > 0;
        match start(run, url) {
            Ok(pid) => {
                let (action, why) = if replacing {
                    run.replacements_due -= 1;
                    (SupervisorAction::Replace, format!("replacing a crashed worker of {name}: {live} running, desired {desired}"))
                } else {
                    (
                        SupervisorAction::Spawn,
                        format!("{claimable} claimable task(s) fit {name} and it holds {held}: {live} running, desired {desired} (min {}, max {})", run.profile.min, run.profile.max),
                    )
                };
                record(submitter, &name, action, Some(pid), why).await;
            }
            Err(error) => tracing::error!("supervisor: cannot start a worker for {name}: {error}"),
        }
        run.next_spawn_at = now + Duration::from_millis(config.spawn_cooldown_ms);
    }
    // Scale down after a sustained surplus.
    if live > desired {
        let since = *run.surplus_since.get_or_insert(now);
        if now.duration_since(since) >= Duration::from_millis(config.idle_shutdown_ms) {
            if let Some(process) = run.processes.iter_mut().rev().find(|p| !p.despawning) {
                process.despawning = true;
                terminate(process.pid);
                let why = format!("{live} running for {held} held and {claimable} claimable task(s) of {name} for {} ms: desired {desired}", config.idle_shutdown_ms);
                let pid = process.pid;
                record(submitter, &name, SupervisorAction::Despawn, Some(pid), why).await;
            }
            run.surplus_since = None;
        }
    } else {
        run.surplus_since = None;
    }
}

fn start(run: &mut Running, url: &NodeAddress) -> std::io::Result<u32> {
    let (program, arguments) = run
        .profile
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = tokio::process::Command::new(program);
    if let Some(model) = &run.profile.model {
        command.env("COLONY_MODEL", model);
    }
    if let Some(ca_file) = &url.ca_file {
        command.env("COLONY_CA_FILE", ca_file);
    }
    let child = command
        .args(arguments)
        .env("COLONY_URL", &url.url)
        .env("COLONY_TOKEN", &run.token)
        .env("COLONY_CAPABILITIES", run.profile.capabilities.join(","))
        .env("COLONY_PROFILE", &run.profile.name)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    run.processes.push(Process {
        child,
        pid,
        despawning: false,
    });
    Ok(pid)
}
