//! The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium
//! (tests/python/dashboard_browser.py) through the link `colony up` prints.

use crate::common;

use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_limits_live_and_takes_votes_in_a_real_browser() {
    let (browser, driver) = tokio::task::spawn_blocking(common::chromium).await.unwrap();
    let python = tokio::task::spawn_blocking(common::tools::python)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    // The quiet genesis, and an upstream MCP server whose `delete_note` a person
    // approves (in the dashboard's MCP view).
    let config = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::quiet_config()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, config.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        config.path().join("mcp.toml"),
        common::tools::notes_upstream_toml(&python),
    )
    .unwrap();
    let (child, base, link) = common::start_with_link(data.path(), config.path(), &[], &[]);
    // The node goes with the test, whatever happens in it.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _node = Kill(child);
    assert!(
        link.starts_with(&format!("{base}/#token=colony_")),
        "{link}"
    );
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("dashboard.png");
    common::run_python(
        "selenium",
        "dashboard_browser.py",
        vec![
            base,
            link,
            admin.trim().to_string(),
            browser.display().to_string(),
            driver.display().to_string(),
            screenshot.display().to_string(),
        ],
    )
    .await;
    let png = std::fs::read(&screenshot).expect("the test saved a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}
