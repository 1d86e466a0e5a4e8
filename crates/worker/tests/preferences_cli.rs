//! `calsync preferences` as a real process against the test database: set from a file,
//! show, preview (stored and unsaved), validate without a database, clear, and clear
//! errors for bad files and unknown users.

use std::process::{Command, Output};

use calsync_seed::{CourseSpec, MeetingSpec, Seed, StudentSpec, hm, ymd};
use chrono::Weekday;
use sqlx::PgPool;

/// The URL of the test's own database.
fn url_of(pool: &PgPool) -> String {
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL")).unwrap();
    url.set_path(pool.connect_options().get_database().unwrap());
    url.to_string()
}

fn calsync(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["preferences"])
        .args(args)
        .env("DATABASE_URL", url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[sqlx::test(migrations = false)]
async fn set_show_preview_validate_clear(pool: PgPool) {
    calsync_domain::migrate(&pool).await.unwrap();
    let mut s = Seed::new();
    let course = s.add_course(
        CourseSpec::new("Calculus I", "MATH", "1750")
            .section("01")
            .dates(ymd(2026, 8, 31), ymd(2026, 12, 11)),
    );
    s.add_meeting(MeetingSpec::new(course, Weekday::Mon, hm(9, 0), hm(9, 50)));
    let ana = s.add_student(StudentSpec::new("ana@uni.edu").calendar("cal-ana"));
    s.enroll(ana, course);
    let ids = s.insert_with_pool(&pool).await.unwrap();
    let ana = ids[ana].to_string();
    let url = url_of(&pool);
    let dir = std::env::temp_dir().join(format!("calsync-prefs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join(format!("good-{ana}.json"));
    std::fs::write(
        &good,
        r#"{"preferences": [{"scope": "class", "title_template": "{{ course_code }} · {{ course_title }}", "color_id": 9}]}"#,
    )
    .unwrap();
    let bad = dir.join(format!("bad-{ana}.json"));
    std::fs::write(&bad, r#"[{"color_id": 0, "title_template": "{{ nope }}"}]"#).unwrap();

    // Validate needs no database.
    let o = calsync("", &["validate", good.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = calsync("", &["validate", bad.to_str().unwrap()], None);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("preferences[0].color_id") && t.contains("unknown variable `nope`"),
        "{t}"
    );

    calsync_domain::tracking::apply_pending_flags(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET calendar_needs_sync = false")
        .execute(&pool)
        .await
        .unwrap();
    // A bad file saves nothing.
    let o = calsync(&url, &["set", &ana, bad.to_str().unwrap()], None);
    assert!(!o.status.success(), "{}", text(&o));
    let o = calsync(&url, &["set", &ana, good.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    calsync_domain::tracking::apply_pending_flags(&pool)
        .await
        .unwrap();
    let flagged: bool = sqlx::query_scalar("SELECT calendar_needs_sync FROM users WHERE id = $1")
        .bind(ana.parse::<i64>().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(flagged);

    let o = calsync(&url, &["show", &ana], None);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("{{ course_code }} · {{ course_title }}"), "{t}");
    assert!(t.contains("(from class)"), "{t}");

    let o = calsync(&url, &["preview", &ana], None);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("MATH 1750-01 · Calculus I"), "{t}");
    assert!(t.contains("color 9"), "{t}");
    // An unsaved set from standard input.
    let o = calsync(
        &url,
        &["preview", &ana, "--file", "-", "--json"],
        Some(r#"[{"title_template": "{{ subject }}!"}]"#),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["events"][0]["summary"], "MATH!");

    let o = calsync(&url, &["clear", &ana], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("deleted 1 preference rows"));
    let o = calsync(&url, &["show", "999999"], None);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown user 999999"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
