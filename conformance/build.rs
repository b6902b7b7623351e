//! Writes the list of conformance cases from `src/cases/*.rs`: every
//! `pub async fn <name><F: Factory>` there is a case, and its file its
//! theme, so a new case is in the suite as soon as it is written.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new("src/cases");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut themes: Vec<(String, Vec<String>)> = std::fs::read_dir(dir)
        .expect("src/cases")
        .map(|entry| entry.expect("a case file").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            println!("cargo::rerun-if-changed={}", path.display());
            let theme = path
                .file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("a case file");
            let mut cases: Vec<String> = Vec::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ")
                    && let Some((name, generics)) = rest.split_once('<')
                    && generics.starts_with("F: Factory>")
                    && !cases.iter().any(|c| c == name)
                {
                    cases.push(name.to_owned());
                }
            }
            (theme, cases)
        })
        .filter(|(_, cases)| !cases.is_empty())
        .collect();
    themes.sort();
    let mut list = String::new();
    for (theme, cases) in &themes {
        let _ = writeln!(list, "            {theme}: [{}],", cases.join(", "));
    }
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let macro_text = format!(
        "/// The cases of every theme, for `conformance_tests!`.\n\
         #[doc(hidden)]\n\
         #[macro_export]\n\
         macro_rules! __conformance_cases {{\n\
         \x20   ($kind:ident ($($factory:tt)*) ($($run:tt)*)) => {{\n\
         \x20       $crate::conformance_tests!(@cases $kind ($($factory)*) ($($run)*) [\n\
         {list}\
         \x20       ]);\n\
         \x20   }};\n\
         }}\n"
    );
    std::fs::write(Path::new(&out).join("cases.rs"), macro_text).expect("write cases.rs");
}
