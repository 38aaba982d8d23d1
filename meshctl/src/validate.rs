//! `meshctl validate -f PATH...`: load and validate config, one line per error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `meshctl validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories of YAML to validate (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

/// Exit 0 when every object is valid, 1 otherwise.
pub fn run(args: &Args) -> ExitCode {
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut objects = 0;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for path in &args.files {
        let (resources, errs) = mesh_api::load_path(path);
        for r in &resources {
            *kinds.entry(r.kind().as_str()).or_default() += 1;
            warnings.extend(mesh_api::validate::warnings(r));
        }
        objects += resources.len();
        errors.extend(errs);
    }
    // Valid but enforced with a fallback: said on stderr, not an error.
    for w in &warnings {
        let _ = writeln!(std::io::stderr(), "warning: {w}");
    }
    if errors.is_empty() {
        let summary: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let _ = writeln!(
            std::io::stdout(),
            "{objects} object(s) valid in {} path(s): {}",
            args.files.len(),
            summary.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let mut err = std::io::stderr().lock();
    for e in &errors {
        let _ = writeln!(err, "{e}");
    }
    let _ = writeln!(err, "{} error(s); {objects} valid object(s)", errors.len());
    ExitCode::FAILURE
}
