//! The runtime: the engine, the modules stored by digest, and one driver per
//! artifact that the kernel says should run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use colony_kernel::artifacts::NewArtifact;
use colony_kernel::{CommandBody, Event, PrincipalId, Resource};
use tokio::sync::{Notify, Semaphore};
use wasmtime::{Engine, Linker, Module};

use crate::config::{RuntimeConfig, Scheduler};
use crate::instance::{HostState, Identity, Kernel, Services};
use crate::module::{self, ModuleError};
use crate::runner::{drive, Control};
use crate::status::{RunState, Status};

/// What the runtime shares with its drivers.
pub(crate) struct Inner {
    pub(crate) config: Arc<RuntimeConfig>,
    pub(crate) engine: Engine,
    /// Ticks the engine's epoch while turns run.
    pub(crate) clock: Arc<crate::epoch::EpochClock>,
    pub(crate) linker: Linker<HostState>,
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) services: Arc<dyn Services>,
    /// `<data>/artifacts`: `modules/<digest>.wasm` and `kv/<address>.kv`.
    pub(crate) dir: PathBuf,
    /// Compiled modules by digest.
    modules: Mutex<HashMap<String, Module>>,
    /// Turns running at once, in the order they asked (`round_robin`).
    pub(crate) permits: Option<Arc<Semaphore>>,
    entries: Mutex<BTreeMap<PrincipalId, Entry>>,
    /// Wakes the reconciler.
    poke: Notify,
}

struct Entry {
    address: String,
    status: Arc<Mutex<Status>>,
    /// The driver, while one runs.
    running: Option<(Arc<Control>, tokio::task::JoinHandle<()>)>,
}

impl Inner {
    /// The compiled module of `digest`, from the cache or its file.
    pub(crate) fn module(&self, digest: &str) -> Result<Module, String> {
        if let Some(module) = self.modules.lock().expect("modules lock").get(digest) {
            return Ok(module.clone());
        }
        let path = self.module_path(digest);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if module::digest(&bytes) != digest {
            return Err(format!("{} does not hash to its name", path.display()));
        }
        let module = module::check(&self.engine, &bytes).map_err(|e| e.to_string())?;
        self.modules
            .lock()
            .expect("modules lock")
            .insert(digest.to_string(), module.clone());
        Ok(module)
    }

    fn module_path(&self, digest: &str) -> PathBuf {
        self.dir.join("modules").join(format!("{digest}.wasm"))
    }
}

/// Why a deploy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error("could not store the module: {0}")]
    Store(String),
    #[error("{}", .0.message)]
    Unavailable(crate::host::HostError),
}

/// A deploy as the API asks for it.
pub struct Deploy {
    pub name: String,
    /// The module, in the binary or the text format.
    pub bytes: Vec<u8>,
    pub quotas: Vec<(Resource, u64)>,
    pub run: bool,
    pub justification: String,
}

/// The artifact runtime of one node.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// A runtime storing under `dir`, with `config` checked.
    pub fn new(
        config: RuntimeConfig,
        kernel: Kernel,
        services: Arc<dyn Services>,
        dir: PathBuf,
    ) -> Result<Runtime, String> {
        config.check()?;
        for sub in ["modules", "kv"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("{}: {e}", dir.join(sub).display()))?;
        }
        let (engine, clock) = engine()?;
        let linker = crate::host::linker(&engine);
        let permits = (config.scheduler == Scheduler::RoundRobin)
            .then(|| Arc::new(Semaphore::new(config.turns_concurrent_max)));
        Ok(Runtime {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                engine,
                clock,
                linker,
                kernel: Arc::new(kernel),
                services,
                dir,
                modules: Mutex::new(HashMap::new()),
                permits,
                entries: Mutex::new(BTreeMap::new()),
                poke: Notify::new(),
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Checks a module and stores it by digest; the bytes and digest of what is
    /// stored (the binary form, even when `bytes` was text).
    pub fn store_module(&self, bytes: &[u8]) -> Result<(String, u64), DeployError> {
        let module = module::check(&self.inner.engine, bytes)?;
        let binary = if bytes.starts_with(b"\0asm") {
            bytes.to_vec()
        } else {
            wat::parse_bytes(bytes)
                .map_err(|e| ModuleError::Compile(e.to_string()))?
                .into_owned()
        };
        let digest = module::digest(&binary);
        let path = self.inner.module_path(&digest);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &binary)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| DeployError::Store(format!("{}: {e}", path.display())))?;
        }
        self.inner
            .modules
            .lock()
            .expect("modules lock")
            .insert(digest.clone(), module);
        Ok((digest, binary.len() as u64))
    }

    /// Deploys an artifact for `deployer`: the module checked and stored, then the
    /// kernel's decision (which may deny it); started at once when it may run.
    pub async fn deploy(
        &self,
        deployer: PrincipalId,
        deploy: Deploy,
    ) -> Result<Event, DeployError> {
        // Compiling is CPU work of its own (bounded by the body's size): off the
        // async threads.
        let runtime = self.clone();
        let module = deploy.bytes;
        let (digest, bytes) = tokio::task::spawn_blocking(move || runtime.store_module(&module))
            .await
            .map_err(|e| DeployError::Store(format!("compiling failed: {e}")))??;
        let mut token_hash = [0u8; 32];
        getrandom::fill(&mut token_hash).map_err(|e| DeployError::Store(e.to_string()))?;
        let new = NewArtifact {
            name: deploy.name,
            digest,
            bytes,
            // Nobody holds this token: the runtime acts for the artifact itself.
            token_hash,
            quotas: deploy.quotas,
            run: deploy.run,
        };
        let event = self
            .inner
            .kernel
            .decide(
                deployer,
                deploy.justification,
                CommandBody::DeployArtifact(Box::new(new)),
            )
            .await
            .map_err(DeployError::Unavailable)?;
        self.poke();
        Ok(event)
    }

    /// Asks the reconciler to look at the kernel's artifacts now.
    pub fn poke(&self) {
        self.inner.poke.notify_one();
    }

    /// Starts a driver for every artifact the kernel says should run and has none;
    /// stops the drivers of those stopped or removed.
    pub fn reconcile(&self) {
        // Every artifact record is a standing principal (a kernel invariant): the
        // known ones, and those of them meant to run.
        let (known, wanted): (Vec<PrincipalId>, BTreeMap<PrincipalId, (String, String)>) = {
            let state = self.inner.kernel.state.read().expect("state lock");
            let known = state.artifacts().map(|a| a.principal).collect();
            let wanted = state
                .artifacts()
                .filter(|a| a.run)
                .map(|a| (a.principal, (a.address.clone(), a.digest.clone())))
                .collect();
            (known, wanted)
        };
        let mut entries = self.inner.entries.lock().expect("entries lock");
        for (principal, entry) in entries.iter_mut() {
            let finished = entry
                .running
                .as_ref()
                .is_some_and(|(_, task)| task.is_finished());
            if finished {
                entry.running = None;
            }
            if !wanted.contains_key(principal) {
                if let Some((control, _)) = &entry.running {
                    control.stop.store(true, Ordering::Release);
                    control.wake.notify_one();
                }
            }
        }
        // Removed artifacts: their stored data goes once their driver is gone.
        let dir = &self.inner.dir;
        entries.retain(|principal, entry| {
            let keep = known.contains(principal) || entry.running.is_some();
            if !keep {
                let _ = std::fs::remove_file(dir.join("kv").join(format!("{}.kv", entry.address)));
            }
            keep
        });
        for (principal, (address, digest)) in wanted {
            let entry = entries.entry(principal).or_insert_with(|| Entry {
                address: address.clone(),
                status: Arc::new(Mutex::new(Status::default())),
                running: None,
            });
            if entry.running.is_some() {
                continue;
            }
            {
                let mut status = entry.status.lock().expect("status lock");
                status.usage = Default::default();
                status.last_error = None;
                status.exhausted = None;
            }
            let control = Arc::new(Control {
                stop: Default::default(),
                wake: Notify::new(),
            });
            let me = Identity { principal, address };
            let task = tokio::spawn(drive(
                Arc::clone(&self.inner),
                me,
                digest,
                Arc::clone(&entry.status),
                Arc::clone(&control),
            ));
            entry.running = Some((control, task));
        }
    }

    /// Reconciles whenever poked, and every second (an artifact's driver that ended
    /// is noticed; a removal made through another route is seen).
    pub fn spawn_reconciler(&self) -> tokio::task::JoinHandle<()> {
        let runtime = self.clone();
        tokio::spawn(async move {
            loop {
                runtime.reconcile();
                tokio::select! {
                    () = runtime.inner.poke.notified() => {}
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        })
    }

    /// What the runtime knows of an artifact (stopped, with no usage, when it has
    /// never run here).
    pub fn status(&self, principal: PrincipalId) -> Status {
        self.inner
            .entries
            .lock()
            .expect("entries lock")
            .get(&principal)
            .map(|entry| entry.status.lock().expect("status lock").clone())
            .unwrap_or_default()
    }

    /// Stops every driver and waits for them (the node is stopping).
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = {
            let mut entries = self.inner.entries.lock().expect("entries lock");
            entries
                .values_mut()
                .filter_map(|entry| entry.running.take())
                .map(|(control, task)| {
                    control.stop.store(true, Ordering::Release);
                    control.wake.notify_one();
                    task
                })
                .collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Wakes every idle artifact (tasks became claimable): one that claims work looks
    /// at once rather than at its next idle wake, which grows while it finds nothing.
    pub fn wake_idle(&self) {
        let entries = self.inner.entries.lock().expect("entries lock");
        for entry in entries.values() {
            if let Some((control, _)) = &entry.running {
                if entry.status.lock().expect("status lock").state == RunState::Idle {
                    control.wake.notify_one();
                }
            }
        }
    }

    /// Whether any artifact has a driver (one that may want waking).
    pub fn any_driven(&self) -> bool {
        let entries = self.inner.entries.lock().expect("entries lock");
        entries.values().any(|entry| entry.running.is_some())
    }

    /// How many drivers run now.
    pub fn running(&self) -> usize {
        self.inner
            .entries
            .lock()
            .expect("entries lock")
            .values()
            .filter(|entry| {
                entry.running.is_some()
                    && entry.status.lock().expect("status lock").state != RunState::Stopped
            })
            .count()
    }
}

/// The engine: fuel metering and epoch interruption on, nothing else beyond the
/// defaults; its epoch advanced while turns run (`crate::epoch`).
fn engine() -> Result<(Engine, Arc<crate::epoch::EpochClock>), String> {
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config).map_err(|e| format!("the WebAssembly engine: {e:#}"))?;
    let clock = crate::epoch::EpochClock::start(&engine)?;
    Ok((engine, clock))
}
