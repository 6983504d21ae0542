//! A module as deployed: its digest, and the checks that refuse it before it is
//! stored (it compiles, imports only Colony's host API, exports `run` and `memory`).

use sha2::{Digest, Sha256};
use wasmtime::{Engine, ExternType, Module, ValType};

use crate::host::HOST_FUNCTIONS;

/// The host API's version: the import module a guest names (`colony`) and the
/// functions it may import are those of [`HOST_FUNCTIONS`].
pub const HOST_MODULE: &str = "colony";

/// Why a module is refused at deploy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("not a WebAssembly module: {0}")]
    Compile(String),
    #[error("imports {module}::{name}: an artifact imports only Colony's host API (module `colony`: {known}); no WASI, filesystem or network")]
    Import {
        module: String,
        name: String,
        known: String,
    },
    #[error("imports colony::{name} with the wrong type: {expected}")]
    ImportType { name: String, expected: String },
    #[error("exports no {0}; an artifact exports `run: () -> i32` and its `memory`")]
    Export(&'static str),
}

/// The SHA-256 of a module's bytes, in lower-case hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compiles `bytes` (binary or text format) and checks its imports and exports.
pub fn check(engine: &Engine, bytes: &[u8]) -> Result<Module, ModuleError> {
    let module = Module::new(engine, bytes).map_err(|e| ModuleError::Compile(format!("{e:#}")))?;
    for import in module.imports() {
        let known = || {
            HOST_FUNCTIONS
                .iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let function = HOST_FUNCTIONS
            .iter()
            .find(|f| import.module() == HOST_MODULE && f.name == import.name())
            .ok_or_else(|| ModuleError::Import {
                module: import.module().to_string(),
                name: import.name().to_string(),
                known: known(),
            })?;
        let ExternType::Func(ty) = import.ty() else {
            return Err(ModuleError::ImportType {
                name: function.name.to_string(),
                expected: function.signature(),
            });
        };
        let params: Vec<ValType> = ty.params().collect();
        let results: Vec<ValType> = ty.results().collect();
        if !same(&params, function.params) || !same(&results, function.results) {
            return Err(ModuleError::ImportType {
                name: function.name.to_string(),
                expected: function.signature(),
            });
        }
    }
    match module.get_export("run") {
        Some(ExternType::Func(ty))
            if ty.params().len() == 0
                && ty.results().len() == 1
                && matches!(ty.results().next(), Some(ValType::I32)) => {}
        _ => return Err(ModuleError::Export("`run: () -> i32`")),
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(ModuleError::Export("`memory`"));
    }
    Ok(module)
}

fn same(found: &[ValType], wanted: &[ValType]) -> bool {
    found.len() == wanted.len() && found.iter().zip(wanted).all(|(a, b)| ValType::eq(a, b))
}
