//! Schemas for the kernel's own types where they appear in a body. The kernel depends
//! on serde alone, so their OpenAPI descriptions live here, built from the kernel's
//! own lists of names so that they cannot drift.

use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

fn names(values: impl IntoIterator<Item = &'static str>, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .description(Some(description))
        .build()
}

/// A task's or a principal's priority.
pub fn priority() -> Object {
    use colony_kernel::Priority;
    names(
        Priority::ALL.map(Priority::as_str),
        "low, normal (the default), high or critical",
    )
}

/// A resource of the ledger, by name.
pub fn resource() -> Object {
    names(
        colony_kernel::Resource::ALL.iter().map(|r| r.as_str()),
        "a resource of the ledger",
    )
}

/// What a parent task does when one of its subtasks dies.
pub fn child_death_policy() -> Object {
    names(
        ["fail", "redecompose"],
        "fail (the default: the parent dies too) or redecompose",
    )
}
