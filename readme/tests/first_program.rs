//! The README shows `drivers/sqlx/examples/durable.rs` as its first
//! program: the two must not drift apart.

#[test]
fn the_readme_shows_the_durable_example_as_it_is() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let example = std::fs::read_to_string(root.join("drivers/sqlx/examples/durable.rs"))
        .expect("the example");
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md must show drivers/sqlx/examples/durable.rs whole, in a rust block"
    );
}
