//! The README's lists of implemented settings come from the settings table:
//! this test fails when they drift apart. `UPDATE_README=1 cargo test
//! --test tests readme_settings` rewrites the README section.

const BEGIN: &str = "<!-- settings:begin (generated from pyconf/src/table.rs) -->\n";
const END: &str = "<!-- settings:end -->";

#[test]
fn readme_lists_the_settings_as_the_table_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(BEGIN)
        .expect("settings:begin marker in README.md")
        + BEGIN.len();
    let end = readme.find(END).expect("settings:end marker in README.md");
    let wanted = pyconf::table::support_markdown();
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{wanted}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &readme[start..end],
        wanted,
        "README.md's settings lists differ from the table: run UPDATE_README=1 cargo test --test tests readme_settings"
    );
}
