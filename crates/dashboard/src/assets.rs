//! The page's files, compiled into the binary.

/// One file of the page.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLES: &str = include_str!("../assets/app.css");
const ICON: &str = include_str!("../assets/icon.svg");

/// The whole page's weight in bytes (every file it loads).
pub const PAGE_BYTES: usize = INDEX.len() + SCRIPT.len() + STYLES.len() + ICON.len();

/// What the page may weigh: the build fails past it.
pub const PAGE_BYTES_MAX: usize = 200 * 1024;
const _: () = assert!(
    PAGE_BYTES <= PAGE_BYTES_MAX,
    "the dashboard outgrew PAGE_BYTES_MAX"
);

/// The file served at `path` (`/` is the page; the rest live under `/dashboard/`).
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/dashboard/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard/app.css" => ("text/css; charset=utf-8", STYLES),
        "/dashboard/icon.svg" => ("image/svg+xml", ICON),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_files_that_are_served() {
        for needed in [
            "/dashboard/app.js",
            "/dashboard/app.css",
            "/dashboard/icon.svg",
        ] {
            assert!(INDEX.contains(needed), "index.html loads {needed}");
            assert!(asset(needed).is_some());
        }
        assert!(asset("/dashboard/../Cargo.toml").is_none());
        // No inline script: the node's Content-Security-Policy forbids it.
        assert!(!INDEX.contains("<script>"));
    }
}
