//! The config reference in docs/operations.md is generated from the settings themselves (clap's
//! description of `strata serve` in src/config.rs), so it cannot drift: this test renders it and
//! fails when the document's section differs. A new setting needs no edit here; regenerate with
//!
//! ```text
//! STRATA_UPDATE_DOCS=1 cargo test --test config_reference
//! ```

use std::path::PathBuf;

use clap::CommandFactory;
use strata::config::Cli;

const START: &str = "<!-- config-reference:start -->";
const END: &str = "<!-- config-reference:end -->";

fn operations_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")
}

/// One table row per `strata serve` setting, in declaration order.
fn render() -> String {
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("strata has a serve subcommand");
    let mut out = String::from(
        "| Setting (TOML key) | Flag | Environment | Default | Meaning |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for argument in serve.get_arguments() {
        let Some(flag) = argument.get_long() else {
            continue;
        };
        if argument.is_hide_set() || flag == "help" || flag == "version" {
            continue;
        }
        let key = flag.replace('-', "_");
        let env = argument
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let mut default = argument
            .get_default_values()
            .iter()
            .map(|v| describe_default(&key, &v.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ");
        if default.is_empty() && matches!(argument.get_action(), clap::ArgAction::SetTrue) {
            default = "`false`".into();
        }
        let help = argument
            .get_long_help()
            .or_else(|| argument.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "| `{key}` | `--{flag}` | {env} | {default} | {} |\n",
            markdown_text(&help)
        ));
    }
    out
}

/// Help text as table-cell text: `|` would end the cell, `<data-dir>` would read as HTML.
fn markdown_text(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The default as written, plus its size in binary units for byte counts.
fn describe_default(key: &str, value: &str) -> String {
    let Ok(bytes) = value.parse::<u64>() else {
        return format!("`{value}`");
    };
    if !key.contains("bytes") || bytes < 1024 {
        return format!("`{value}`");
    }
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match units.iter().find(|(_, size)| bytes % size == 0) {
        Some((unit, size)) => format!("`{value}` ({} {unit})", bytes / size),
        None => format!("`{value}`"),
    }
}

/// The document with `reference` between the markers.
fn with_reference(document: &str, reference: &str) -> String {
    let start = document
        .find(START)
        .expect("docs/operations.md has the config-reference:start marker");
    let end = document
        .find(END)
        .expect("docs/operations.md has the config-reference:end marker");
    assert!(start < end, "the config-reference markers are out of order");
    format!(
        "{}{START}\n{reference}{}",
        &document[..start],
        &document[end..]
    )
}

#[test]
fn config_reference_in_operations_md_matches_the_settings() {
    let path = operations_md();
    let document = std::fs::read_to_string(&path).expect("docs/operations.md exists");
    let expected = with_reference(&document, &render());
    if expected == document {
        return;
    }
    if std::env::var_os("STRATA_UPDATE_DOCS").is_some() {
        std::fs::write(&path, expected).expect("docs/operations.md is writable");
        return;
    }
    panic!(
        "docs/operations.md's config reference differs from the settings in src/config.rs; \
         regenerate it with `STRATA_UPDATE_DOCS=1 cargo test --test config_reference`"
    );
}

#[test]
fn every_setting_is_in_the_reference_with_its_environment_variable() {
    let reference = render();
    for (key, env) in [
        ("data_dir", "STRATA_DATA_DIR"),
        ("object_store", "STRATA_OBJECT_STORE"),
        ("wal_segment_ms", "STRATA_WAL_SEGMENT_MS"),
    ] {
        let row = reference
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("no row for {key}:\n{reference}"));
        assert!(row.contains(&format!("`{env}`")), "{row}");
    }
    assert_eq!(
        describe_default("cache_memory_bytes", "268435456"),
        "`268435456` (256 MiB)"
    );
    assert_eq!(describe_default("node_id", "1"), "`1`");
}
