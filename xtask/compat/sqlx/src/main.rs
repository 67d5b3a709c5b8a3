//! Uses all three crates, so the check links them together rather than resolving them only.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("compat-sqlx-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    let one: (i64,) = sqlx::query_as("SELECT 1").fetch_one(&pool).await?;
    let kit = audit_testkit::TestKit::builder()
        .data_path(dir.join("testkit.sqlite"))
        .start()
        .await?;
    let spool = audit_core::emitter::SpoolConfig::new(dir.join("spool.sqlite")).open()?;
    println!("sqlx: {}, testkit: {}", one.0, kit.url());
    drop(spool);
    kit.shutdown();
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
