//! `meshctl analyze`: Istio's analyzer warnings for files (`-f`) or a running pilot, one line
//! each with its code and file:line, as `istioctl analyze` prints them.

use std::process::ExitCode;

use mesh_api::analysis::{self, Level, Message};

use crate::source::{self, ConfigSource};

/// istioctl's exit code when the analysis found errors.
pub const FOUND_ISSUES: u8 = 79;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: ConfigSource,
    /// Output format: text (one line per message) or json.
    #[arg(short, long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// Load errors first (IST0106), then the analysis, as one list.
pub fn messages(loaded: &source::Loaded) -> Vec<Message> {
    loaded
        .errors
        .iter()
        .map(Message::from)
        .chain(analysis::analyze(&loaded.resources, &loaded.inventory))
        .collect()
}

pub fn run(args: &Args) -> ExitCode {
    let loaded = match source::load(&args.source) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meshctl analyze: {e}");
            return ExitCode::FAILURE;
        }
    };
    let found = messages(&loaded);
    if args.output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).unwrap_or_default()
        );
    } else if found.is_empty() {
        println!(
            "✔ No validation issues found when analyzing {}.",
            loaded.origin
        );
    } else {
        for m in &found {
            println!("{m}");
        }
    }
    if found.iter().any(|m| m.level == Level::Error) {
        ExitCode::from(FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    }
}
