//! The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium
//! (tests/python/dashboard_browser.py) through the link `colony up` prints.

use crate::common;

use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_limits_live_and_takes_votes_in_a_real_browser() {
    let (browser, driver) = tokio::task::spawn_blocking(common::chromium).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = common::quiet_config();
    let (child, base, link) = common::start_with_link(data.path(), &config, &[], &[]);
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
